-- Make a dead job ready again. KEYS[1] dead list, KEYS[2] job key, KEYS[3] ready list,
-- KEYS[4] dead-errors hash; ARGV[1] id, ARGV[2] json read earlier, ARGV[3] new json,
-- ARGV[4] wake-up channel, ARGV[5] routing key, ARGV[6] a grouped job's grouplib.join spec
-- ("" or absent: none; KEYS[3] is then its group's list). Returns 1 if requeued.
--#include grouplib
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
if ARGV[6] and ARGV[6] ~= '' then grouplib().join(ARGV[6]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
