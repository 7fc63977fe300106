-- Claim up to `limit` ready ids in one call, walking the ready lists in the order given
-- (see claimlib.lua for what a claim does to each id, and for waiters).
-- KEYS[1] processing list, KEYS[2] lease set, KEYS[3] dead list, KEYS[4] dead-errors hash,
-- KEYS[5..] ready lists (routing keys in the caller's order, priorities high to low)
-- ARGV[1] job key prefix, ARGV[2] limit, ARGV[3] lease deadline, ARGV[4] error for missing jobs,
-- ARGV[5] updated_at (RFC 3339), ARGV[6] number of job names to filter on (0: any), ARGV[7..] the names,
-- then three arguments for groups (grouplib.lua): the groups prefix "{ns}:groups:", per ready list
-- (newline-joined) "turns key<TAB>group list prefix" of its line (a line's lists are adjacent), and
-- now (seconds). A line whose turns key exists is claimed by turns (grouplib.claim_line); any other
-- exactly as before groups existed (lib.walk).
-- A waiter's claim adds, after those: token, register (1: register if nothing was claimed),
-- waiting prefix, waiter prefix, inbox prefix, now (seconds), registration expiry, lease seconds,
-- routing keys joined by newlines. It first takes what was handed to its inbox (those jobs are
-- already claimed for it), and unregisters unless it registers again.
-- Returns {id, json, edited, ...}, and one more element when a group held back ready jobs and
-- one of them may start later: the earliest time (seconds) a lease ends or a start leaves a window.
--#include claimlib
--#include grouplib
local lib = claimlib()
local limit, nnames = tonumber(ARGV[2]), tonumber(ARGV[6])
local names = nil
if nnames > 0 then
  names = {}
  for i = 1, nnames do names[ARGV[6 + i]] = true end
end
local c = {
  prefix = ARGV[1], processing = KEYS[1], leases = KEYS[2], dead = KEYS[3], dead_errors = KEYS[4],
  deadline = ARGV[3], missing = ARGV[4], now = ARGV[5],
}
local lists = {}
for k = 5, #KEYS do lists[#lists + 1] = KEYS[k] end
local out = {}
local gbase = 7 + nnames
local lines = lib.split(ARGV[gbase + 1])
local g = nil

-- claim up to `want` jobs, line by line (a line's plain lists are adjacent in `lists`)
local function claim_lines(want)
  local taken, i = 0, 1
  while i <= #lists and taken < want do
    local j, same = i, {}
    while j <= #lists and lines[j] == lines[i] do
      same[#same + 1] = lists[j]
      j = j + 1
    end
    local turns, prefix = string.match(lines[i] or '', '^(.-)\t(.*)$')
    if turns and redis.call('EXISTS', turns) == 1 then
      if g == nil then
        local p = ARGV[gbase]
        g = {
          limits = p .. 'limits', running = p .. 'running:', starts = p .. 'starts:', leases = KEYS[2],
          now = tonumber(ARGV[gbase + 2]), now_text = ARGV[gbase + 2], cache = {}, lib = grouplib(),
        }
      end
      local line = {lists = same, turns = turns, prefix = prefix}
      taken = taken + g.lib.claim_line(lib, c, g, line, want - taken, names, out)
    else
      taken = taken + lib.walk(c, same, want - taken, names, out)
    end
    i = j
  end
  return taken
end

local function reply()
  if g ~= nil and g.next ~= nil then out[#out + 1] = string.format('%.17g', g.next) end
  return out
end

local r = gbase + 3
local token = ARGV[r]
if not token then
  claim_lines(limit)
  return reply()
end
local w = {waiting = ARGV[r + 2], waiter = ARGV[r + 3], inbox = ARGV[r + 4], now = ARGV[r + 5]}
local expiry, lease, routes = ARGV[r + 6], ARGV[r + 7], lib.split(ARGV[r + 8])
lib.unregister(w, token, routes)
while true do
  local entry = redis.call('RPOP', w.inbox .. token)
  if not entry then break end
  lib.unpack_into(entry, out)
end
local taken = #out / 3
if taken < limit then taken = taken + claim_lines(limit - taken) end
if taken == 0 and ARGV[r + 1] == '1' then
  local key = w.waiter .. token
  redis.call('HSET', key, 'lists', table.concat(lists, '\n'), 'routes', ARGV[r + 8], 'limit', limit, 'lease', lease)
  redis.call('PEXPIRE', key, math.floor((tonumber(expiry) - tonumber(w.now)) * 1000) + 1000)
  for _, route in ipairs(routes) do
    redis.call('ZREMRANGEBYSCORE', w.waiting .. route, '-inf', '(' .. w.now)  -- killed workers' entries
    redis.call('ZADD', w.waiting .. route, expiry, token)
  end
end
return reply()
