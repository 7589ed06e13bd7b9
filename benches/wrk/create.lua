-- POST /v1/orgs/{org_id}/projects {"name": ...} for a random org, with a unique name.
package.path = (os.getenv("WRK_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local rows
local thread_tag
local counter = 0

-- Each thread gets its own id (for its random seed).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  local seed = os.time() * 1000 + (tid or 0)
  math.randomseed(seed)
  thread_tag = (tid or 0) .. "-" .. os.time() .. "-" .. math.random(1, 1000000000)
  rows = common.load()
end

function request()
  counter = counter + 1
  local row = rows[math.random(#rows)]
  return wrk.format("POST", "/v1/orgs/" .. row.org .. "/projects",
    { ["Authorization"] = "Bearer " .. row.token, ["Content-Type"] = "application/json" },
    '{"name":"w-' .. thread_tag .. '-' .. counter .. '"}')
end
