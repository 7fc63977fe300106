-- Make one due scheduled job ready, unless another scheduler already did (ZREM is the guard),
-- and wake the idle workers of its routing key (see claimlib.lua).
-- KEYS[1] scheduled set, KEYS[2] job key, KEYS[3] ready list (or dead list), KEYS[4] dead-errors hash
-- ARGV[1] id, ARGV[2] json read earlier ("" if missing), ARGV[3] new json ("" = bury as dead),
-- ARGV[4] wake-up channel, ARGV[5] routing key, ARGV[6] dead error,
-- ARGV[7] waiting prefix, ARGV[8] waiter prefix, ARGV[9] inbox prefix, ARGV[10] now (seconds),
-- ARGV[11] a grouped job's grouplib.join spec ("" or absent: no group; KEYS[1] is then
-- {ns}:groups:scheduled and KEYS[3] its group's list)
-- Returns 1 if moved, 0 if not (moved by someone else, or changed since it was read).
--#include claimlib
--#include grouplib
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
if ARGV[11] and ARGV[11] ~= '' then grouplib().join(ARGV[11]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
if redis.call('ZCOUNT', ARGV[7] .. ARGV[5], ARGV[10], '+inf') > 0 then
  claimlib().serve_waiters(nil, {waiting = ARGV[7], waiter = ARGV[8], inbox = ARGV[9], now = ARGV[10]}, ARGV[5], true)
end
return 1
