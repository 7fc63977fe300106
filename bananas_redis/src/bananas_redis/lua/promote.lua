-- Make one due scheduled job ready, unless another scheduler already did (ZREM is the guard).
-- KEYS[1] scheduled set, KEYS[2] job key, KEYS[3] ready list (or dead list), KEYS[4] dead-errors hash
-- ARGV[1] id, ARGV[2] json read earlier ("" if missing), ARGV[3] new json ("" = bury as dead),
-- ARGV[4] wake-up channel, ARGV[5] routing key, ARGV[6] dead error
-- Returns 1 if moved, 0 if not (moved by someone else, or changed since it was read).
local id = ARGV[1]
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[2] then return 0 end
if redis.call('ZREM', KEYS[1], id) == 0 then return 0 end
if ARGV[3] == '' then
  redis.call('LPUSH', KEYS[3], id)
  redis.call('HSET', KEYS[4], id, ARGV[6])
  return 1
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('LPUSH', KEYS[3], id)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
