-- wrk script: POST a chat completion and print one machine-readable line at the end.
--   wrk -t2 -c32 -d10s -s bench/chat.lua http://HOST:PORT/v1/chat/completions
--   ... -- stream          an SSE request ("stream": true, usage in the last chunk)
--   ... -- limit=50000     each thread stops after that many responses
--   ... -- body=FILE       POST FILE's contents instead (another protocol's request)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- A client key: celgate must replace it with the backend's, never forward it.
wrk.headers["Authorization"] = "Bearer sk-client-key-never-forwarded"

local plain = [[{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"What is the capital of France? Answer in one short sentence."}],"temperature":0.2,"max_tokens":64}]]
local stream = [[{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"What is the capital of France? Answer in one short sentence."}],"temperature":0.2,"max_tokens":64}]]

wrk.body = plain

-- wrk.init calls this, then builds the (static) request from wrk.*.
function init(args)
   for _, a in ipairs(args) do
      if a == "stream" then
         wrk.body = stream
      elseif string.sub(a, 1, 5) == "body=" then
         local f = assert(io.open(string.sub(a, 6), "rb"))
         wrk.body = f:read("*a")
         f:close()
      elseif string.sub(a, 1, 6) == "limit=" then
         -- Only defined when asked for: a response() hook costs a Lua call per response.
         local limit, seen = tonumber(string.sub(a, 7)), 0
         response = function(status, headers, body)
            seen = seen + 1
            if seen >= limit then
               wrk.thread:stop()
            end
         end
      end
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK_RESULT requests=%d duration_us=%d bytes=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d lat_p50_us=%d lat_p90_us=%d lat_p99_us=%d lat_max_us=%d lat_mean_us=%.1f\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
