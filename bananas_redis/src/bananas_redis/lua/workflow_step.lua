-- Settle a workflow step and follow its link in the same script: finish.lua's KEYS and ARGV
-- (unchanged, result hash included), then the workflow hash as one more KEY and, as the last
-- ARGV, how many workflow arguments precede it:
--   W[1] namespace prefix "{ns}:", W[2] step id, W[3] "ok" | "dead" | "cancelled" | "" (a retry:
--   settle only), W[4] outcome JSON, W[5] value JSON (the result, or null), W[6] error for
--   missing jobs, W[7] updated_at (RFC 3339), W[8] now (seconds), W[9] TTL ms of the workflow
--   hash once no step runs
-- Returns finish.lua's code; the link is followed only when the settle was applied now (1).
--#include claimlib
--#include wflib
local wkey = table.remove(KEYS)
local nw = tonumber(table.remove(ARGV))
local W = {}
for i = nw, 1, -1 do W[i] = table.remove(ARGV) end

local function finish()
--#include finish
end

local code = finish()
if code ~= 1 or W[3] == '' then return code end
local wf = wflib(wkey, W[1])
wf.settle(W[2], W[3] == 'ok' and 'completed' or W[3], W[4], W[5], W[9])
wf.wake(W[6], W[7], W[8])
return code
