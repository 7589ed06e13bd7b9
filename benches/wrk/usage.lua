-- GET /v1/orgs/{org_id}/usage for the org on line $USAGE_ORG_LINE of $TOKENS_FILE.
package.path = (os.getenv("WRK_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local req

function init(args)
  local rows = common.load()
  local row = rows[tonumber(os.getenv("USAGE_ORG_LINE") or "1")]
  req = wrk.format("GET", "/v1/orgs/" .. row.org .. "/usage", { ["Authorization"] = "Bearer " .. row.token })
end

function request()
  return req
end
