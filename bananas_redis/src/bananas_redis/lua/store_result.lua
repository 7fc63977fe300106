-- Store a result hash, set its TTL and wake its waiters.
-- KEYS[1] result hash; ARGV[1] TTL ms, ARGV[2] notify channel, ARGV[3..] field/value pairs
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'ready')
return 1
