-- Shared by the wrk scripts: loads "org_id token" lines from $TOKENS_FILE (written by
-- `cargo run --release --example bench_tokens -- tokens N`).
local M = {}

function M.load()
  local path = os.getenv("TOKENS_FILE") or error("TOKENS_FILE is not set")
  local rows = {}
  for line in io.lines(path) do
    local org, token = line:match("^(%S+) (%S+)$")
    if org then rows[#rows + 1] = { org = org, token = token } end
  end
  assert(#rows > 0, "no tokens in " .. path)
  return rows
end

return M
