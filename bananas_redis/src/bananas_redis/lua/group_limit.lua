-- Store or remove a group's limit (a script, so that with wait_replicas the write is confirmed
-- like every other; a worker whose claim found the group held back sees the change at its next
-- claim, within its poll interval). KEYS[1] {ns}:groups:limits; ARGV[1] group (or "*"), ARGV[2] the limit's
-- JSON, or "" to remove it. Returns 1 if a limit was stored or removed, 0 if there was none to remove.
local changed
if ARGV[2] == '' then
  changed = redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  changed = 1
end
return changed
