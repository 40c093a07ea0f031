--!include prelude
-- ARGV: prefix, now, window_s, vendors without a revoke (comma-separated), job ids... Asks for the revoke
-- of each sent job not asked for before (request_revoke in the prelude). Returns {queued, too_late,
-- unsupported, skipped} counts.
local now, window, unsupported = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local n = {pending = 0, too_late = 0, unsupported = 0, skipped = 0}
for i = 5, #ARGV do
  local got = request_revoke(ARGV[i], now, window, unsupported)
  if got then n[got] = n[got] + 1 else n.skipped = n.skipped + 1 end
end
if n.pending > 0 then wake() end
return {n.pending, n.too_late, n.unsupported, n.skipped}
