-- Fire one cron tick: enqueue its job and update the schedule state, unless the state changed
-- since the caller read it or another scheduler holds the documented lock.
-- KEYS[1] schedule hash, KEYS[2] schedule lock, KEYS[3] job key, KEYS[4] ready list or scheduled set
-- ARGV[1] last_run the caller saw ("" = none), ARGV[2] tick (RFC 3339), ARGV[3] next_run,
-- ARGV[4] job json, ARGV[5] kind ("L" | "Z"), ARGV[6] score (Z), ARGV[7] wake-up channel, ARGV[8] routing key, ARGV[9] job id
-- Returns 1 fired, 0 state changed (re-read and decide again), -1 locked by another scheduler, -2 duplicate job id
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local seen = redis.call('HGET', KEYS[1], 'last_run') or ''
if seen ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return -2 end
redis.call('SET', KEYS[3], ARGV[4])
if ARGV[5] == 'Z' then
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[9])
else
  redis.call('LPUSH', KEYS[4], ARGV[9])
  redis.call('PUBLISH', ARGV[7], ARGV[8])
end
redis.call('HSET', KEYS[1], 'last_run', ARGV[2], 'next_run', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'run_count', 1)
return 1
