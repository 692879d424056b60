-- Appended to every wrk run by loadgen.py: prints the run's summary as one
-- JSON line, tagged FSBENCH, so run.py need not scrape wrk's human output.
-- Latencies are in microseconds; p99.9 is not in wrk's --latency table.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'FSBENCH {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
