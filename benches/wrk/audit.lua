-- GET /v1/orgs/{org_id}/audit-log?limit=20 (the newest page) for the org on line
-- $AUDIT_ORG_LINE of $TOKENS_FILE.
package.path = (os.getenv("WRK_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")
local req

function init(args)
  local rows = common.load()
  local row = rows[tonumber(os.getenv("AUDIT_ORG_LINE") or "1")]
  req = wrk.format("GET", "/v1/orgs/" .. row.org .. "/audit-log?limit=20",
    { ["Authorization"] = "Bearer " .. row.token })
end

function request()
  return req
end
