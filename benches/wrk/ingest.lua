-- POST /v1/orgs/{org_id}/usage-events: a batch of $BATCH (default 1000) events with
-- unique ids for the "tokens" sum meter of a random org (the seed creates it), with a JWT.
--
-- Each event's text after its id is built once per thread (the timestamp is the thread's
-- start, well inside the accepted window); a request only writes the ids' common prefix
-- into every other slot and joins. Building every event's text anew in Lua for each
-- request cost the load generator 0.8 ms of CPU per batch, taken from the two cores the
-- server and PostgreSQL share (issue 11).
package.path = (os.getenv("WRK_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local rows
local tag
local counter = 0
local batch = tonumber(os.getenv("BATCH") or "1000")
local parts = {}

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  tag = (tid or 0) .. "-" .. os.time() .. "-" .. math.random(1, 1000000000)
  rows = common.load()
  local ts = os.date("!%Y-%m-%dT%H:%M:%SZ")
  parts[1] = '{"events":['
  for i = 1, batch do
    parts[2 * i + 1] = '-' .. i .. '","meter":"tokens","value":' .. (i % 97)
      .. ',"subject":"c' .. (i % 13) .. '","timestamp":"' .. ts .. '"}' .. (i < batch and ',' or ']}')
  end
end

function request()
  counter = counter + 1
  local row = rows[math.random(#rows)]
  local prefix = '{"id":"' .. tag .. '-' .. counter
  for i = 1, batch do
    parts[2 * i] = prefix
  end
  return wrk.format("POST", "/v1/orgs/" .. row.org .. "/usage-events",
    { ["Authorization"] = "Bearer " .. row.token, ["Content-Type"] = "application/json" },
    table.concat(parts))
end
