-- Cancel a job, atomically (see bananas_redis/cancel.py).
-- KEYS[1] job key, KEYS[2] lease set, KEYS[3] scheduled set, KEYS[4] the job's ready list,
-- KEYS[5] the legacy default-route ready list of its priority (or KEYS[4] again),
-- KEYS[6] its cancel-request key {ns}:cancel:{id}
-- ARGV[1] id, ARGV[2] the job JSON the caller read, ARGV[3] the cancelled JSON,
-- ARGV[4] TTL ms of the cancelled record, ARGV[5] TTL ms of a cancel request
-- Returns 1: cancelled (it left the ready list or scheduled set it waited in; no worker can pop
-- it), 2: cancel requested (it is claimed: the request key is set for its worker),
-- 0: the stored JSON is not the one read (the caller reads again), -1: it waits nowhere
-- (not claimed, not ready, not scheduled: nothing changed), 3: this very cancel was applied
-- before (a retried call: nothing changed).
local id = ARGV[1]
local stored = redis.call('GET', KEYS[1])
if stored ~= ARGV[2] then
  if stored == ARGV[3] then return 3 end
  return 0
end
if redis.call('ZSCORE', KEYS[2], id) then
  redis.call('SET', KEYS[6], '1', 'PX', ARGV[5])
  return 2
end
local removed = redis.call('ZREM', KEYS[3], id) + redis.call('LREM', KEYS[4], 0, id)
if KEYS[5] ~= KEYS[4] then removed = removed + redis.call('LREM', KEYS[5], 0, id) end
if removed == 0 then return -1 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
