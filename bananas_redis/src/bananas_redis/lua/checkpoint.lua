-- Save a claimed job's checkpoint, fenced by its claim (see finish.lua's fence).
-- KEYS[1] lease set ({ns}:queue:leases; its :holders hash names each claimed job's claim),
-- KEYS[2] the checkpoint key {ns}:checkpoint:{id}
-- ARGV[1] job id, ARGV[2] lease token ("c" + claim number), ARGV[3] state (JSON), ARGV[4] TTL ms
-- Returns 1 when saved, 0 when the claim no longer holds the job (nothing written).
local token = ARGV[2]
if string.sub(token, 1, 1) ~= 'c' or redis.call('HGET', KEYS[1] .. ':holders', ARGV[1]) ~= string.sub(token, 2) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
