-- GET /v1/orgs/{org_id}/projects?limit=20 with an API key (X-API-Key) of a random org,
-- from $KEYS_FILE. HOT_KEYS=n uses only the first n orgs' keys (1: one hot key).
package.path = (os.getenv("WRK_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local reqs = {}

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  local hot = tonumber(os.getenv("HOT_KEYS") or "0")
  for i, row in ipairs(common.load(os.getenv("KEYS_FILE") or error("KEYS_FILE is not set"))) do
    if hot == 0 or i <= hot then
      reqs[#reqs + 1] = wrk.format("GET", "/v1/orgs/" .. row.org .. "/projects?limit=20",
        { ["X-API-Key"] = row.token })
    end
  end
end

function request()
  return reqs[math.random(#reqs)]
end
