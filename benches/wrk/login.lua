-- POST /v1/auth/login for a random seeded user (bench-<i>@example.com, $BENCH_PASSWORD).
local orgs = tonumber(os.getenv("ORGS") or "10000")
local password = os.getenv("BENCH_PASSWORD") or error("BENCH_PASSWORD is not set")

-- Each thread gets its own id (for its random seed).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  local i = math.random(orgs)
  return wrk.format("POST", "/v1/auth/login", { ["Content-Type"] = "application/json" },
    '{"email":"bench-' .. i .. '@example.com","password":"' .. password .. '"}')
end
