-- Shared by the wrk scripts: loads "org_id credential" lines from $TOKENS_FILE (access
-- tokens, from `bench_tokens tokens N`) or the file named (API keys, `bench_tokens keys N`).
local M = {}

function M.load(path)
  path = path or os.getenv("TOKENS_FILE") or error("TOKENS_FILE is not set")
  local rows = {}
  for line in io.lines(path) do
    local org, token = line:match("^(%S+) (%S+)$")
    if org then rows[#rows + 1] = { org = org, token = token } end
  end
  assert(#rows > 0, "no tokens in " .. path)
  return rows
end

return M
