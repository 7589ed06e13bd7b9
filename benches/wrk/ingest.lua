-- POST /v1/orgs/{org_id}/usage-events: a batch of $BATCH (default 1000) events with
-- unique ids for the "tokens" sum meter of a random org (the seed creates it), with a JWT.
package.path = (os.getenv("WRK_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local rows
local tag
local counter = 0
local batch = tonumber(os.getenv("BATCH") or "1000")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  tag = (tid or 0) .. "-" .. os.time() .. "-" .. math.random(1, 1000000000)
  rows = common.load()
end

function request()
  counter = counter + 1
  local row = rows[math.random(#rows)]
  local ts = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local parts = {}
  for i = 1, batch do
    parts[i] = '{"id":"' .. tag .. '-' .. counter .. '-' .. i .. '","meter":"tokens","value":' .. (i % 97)
      .. ',"subject":"c' .. (i % 13) .. '","timestamp":"' .. ts .. '"}'
  end
  return wrk.format("POST", "/v1/orgs/" .. row.org .. "/usage-events",
    { ["Authorization"] = "Bearer " .. row.token, ["Content-Type"] = "application/json" },
    '{"events":[' .. table.concat(parts, ",") .. ']}')
end
