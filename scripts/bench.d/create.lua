-- wrk script: POST one create per request to csrd (CSRD_TOKEN, CSRD_OWNER, KEY_TYPE from the
-- environment). Every request is a new CSR; the body names differ per request so nothing dedups.
local token = os.getenv("CSRD_TOKEN")
local owner = os.getenv("CSRD_OWNER")
local key_type = os.getenv("KEY_TYPE") or "p256v1"
local counter = 0

request = function()
  counter = counter + 1
  local cn = "bench" .. (counter_base or 0) .. "-" .. counter .. ".example.com"
  local body = '{"common_name":"' .. cn .. '","country":"US","state":"California",' ..
    '"locality":"San Francisco","organization":"csrd bench","sans":["' .. cn .. '"],' ..
    '"key_type":"' .. key_type .. '"}'
  return wrk.format("POST", "/client/v4/accounts/" .. owner .. "/custom_csrs",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end

statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local threads = {}
setup = function(thread)
  thread:set("counter_base", #threads)
  table.insert(threads, thread)
end

done = function(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do total[s] = (total[s] or 0) + n end
  end
  local parts = {}
  for s, n in pairs(total) do parts[#parts + 1] = s .. "=" .. n end
  io.write("statuses: " .. table.concat(parts, " ") .. "\n")
end
