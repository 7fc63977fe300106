-- A grouped job settled, so its group may have a free slot: wake the workers waiting for its
-- routing key (a wake-up message for subscribers, and one idle waiter woken; see claimlib.lua).
-- KEYS[1] wake-up channel's namespace key (routes the call: {ns}:queue:leases)
-- ARGV[1] wake-up channel, ARGV[2] routing key, ARGV[3] waiting prefix, ARGV[4] waiter prefix,
-- ARGV[5] inbox prefix, ARGV[6] now (seconds)
--#include claimlib
redis.call('PUBLISH', ARGV[1], ARGV[2])
if redis.call('ZCOUNT', ARGV[3] .. ARGV[2], ARGV[6], '+inf') > 0 then
  claimlib().serve_waiters(nil, {waiting = ARGV[3], waiter = ARGV[4], inbox = ARGV[5], now = ARGV[6]}, ARGV[2], true)
end
return 1
