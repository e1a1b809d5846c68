-- wrk script: cfssl's newkey API (key + CSR in memory; no auth, nothing stored). KEY_TYPE
-- p256v1 -> ecdsa 256, rsa2048 -> rsa 2048.
local key_type = os.getenv("KEY_TYPE") or "p256v1"
local algo, size = "ecdsa", 256
if key_type == "rsa2048" then algo, size = "rsa", 2048 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"hosts":["bench.example.com"],"CN":"bench.example.com","key":{"algo":"' .. algo ..
  '","size":' .. size .. '},"names":[{"C":"US","ST":"California","L":"San Francisco","O":"csrd bench"}]}'
