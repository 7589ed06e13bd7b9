-- GET /v1/orgs/{org_id}/projects?limit=20 with a valid JWT for a random org per request.
-- Requests are pre-formatted per org at start so the load generator spends its CPU on
-- sending, not on Lua string building.
package.path = (os.getenv("WRK_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local reqs = {}

-- Each thread gets its own id (for its random seed).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  for i, row in ipairs(common.load()) do
    reqs[i] = wrk.format("GET", "/v1/orgs/" .. row.org .. "/projects?limit=20",
      { ["Authorization"] = "Bearer " .. row.token })
  end
end

function request()
  return reqs[math.random(#reqs)]
end
