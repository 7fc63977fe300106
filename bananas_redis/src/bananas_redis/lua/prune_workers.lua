-- Forget workers whose announcement expired. KEYS[1] expiry set, KEYS[2] info hash; ARGV[1] now.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return #ids
