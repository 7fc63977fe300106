-- Cancel a job and, when that cancels a workflow step not started (cancel.lua's 1), record it
-- cancelled and follow its dead link in the same script: cancel.lua's KEYS and ARGV (unchanged),
-- then the workflow hash as one more KEY and workflow_step.lua's W arguments (W[3] "cancelled")
-- followed by their count as the last ARGV. Returns cancel.lua's code.
--#include claimlib
--#include wflib
local wkey = table.remove(KEYS)
local nw = tonumber(table.remove(ARGV))
local W = {}
for i = nw, 1, -1 do W[i] = table.remove(ARGV) end

local function cancel()
--#include cancel
end

local code = cancel()
if code ~= 1 then return code end
local wf = wflib(wkey, W[1])
wf.settle(W[2], 'cancelled', W[4], W[5], W[9])
wf.wake(W[6], W[7], W[8])
return code
