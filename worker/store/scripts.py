"""The Lua scripts that move jobs between states, atomically.

Every state change happens inside one script, together with the queue/set/counter writes it implies, so
a crash between two Redis calls can never leave a job half-moved, and campaign counts always add up to
the campaign's total (each transition decrements the old state's counter and increments the new one).

The scripts build key names from the prefix (see :mod:`worker.store.keys` for the layout): this product runs on
one Redis (or a Sentinel-managed primary), not Redis Cluster.

Crash safety rests on two facts. A job is ``sending`` only between :data:`BEGIN` and :data:`FINISH`; and
every job a batch holds is listed in ``claimed:{account}`` under a lease with a TTL. When a lease dies
(worker SIGKILLed), :data:`RECOVER` puts the untouched jobs back at the head of their queue and turns the
``sending`` one into an *unknown outcome* for review: it may have reached WeChat, so it is never resent
blindly. A late ``FINISH`` that brings a success for such a job still records its ids.
"""

from __future__ import annotations

PRELUDE = r"""
local p = ARGV[1]
local function jkey(id) return p .. ':job:' .. id end
-- a campaign's per-state counters follow each of its jobs' transitions, so they add up to its total
local function count(camp, from, to)
  if camp and camp ~= '' then
    local ck = p .. ':campaign:' .. camp
    redis.call('HINCRBY', ck, 'n:' .. from, -1)
    redis.call('HINCRBY', ck, 'n:' .. to, 1)
  end
end
local function move(jk, from, to, camp)
  redis.call('HSET', jk, 'state', to)
  if camp == nil then camp = redis.call('HGET', jk, 'campaign') end
  count(camp, from, to)
end
-- Ready jobs live in one list per source: an account's single messages ('s' -> q:{a}) and each
-- campaign ('c:{cid}' -> cq:{cid}:{a}); src:{a} orders the sources for round robin. High priority
-- jobs (qh:{a}) always go first.
local function source_key(account, name)
  if name == 's' then return p .. ':q:' .. account end
  return p .. ':cq:' .. string.sub(name, 3) .. ':' .. account
end
local function add_source(account, name)
  local sk = p .. ':src:' .. account
  if redis.call('ZSCORE', sk, name) then return end
  local top = redis.call('ZREVRANGE', sk, 0, 0, 'WITHSCORES')
  local score = 0
  if top[2] then score = tonumber(top[2]) + 1 end
  redis.call('ZADD', sk, score, name)
end
-- an idle account with ready jobs waits in sched until the dispatcher looks at it (score 0: at once;
-- an account already waiting there for its next sendable moment keeps that moment). An account with a
-- batch in flight is not added: RELEASE (or RECOVER) puts it back with its next sendable moment.
local function schedule(account)
  if redis.call('SISMEMBER', p .. ':leased', account) == 0 then
    redis.call('ZADD', p .. ':sched', 'NX', 0, account)
  end
end
-- a lease value ending in '!' tells the session holding it that something it was claimed under changed
-- (a high-priority job arrived, the account or one of its campaigns was paused, cancelled or edited): it
-- ends at its next job and the next session is claimed under the new state. So BEGIN need not re-read the
-- account's status, its campaigns' status or the high-priority queue for every send.
local function flag_lease(account)
  local lk = p .. ':lease:' .. account
  local cur = redis.call('GET', lk)
  if cur and string.sub(cur, -1) ~= '!' then redis.call('SET', lk, cur .. '!', 'KEEPTTL') end
end
-- the lease is this session's (flagged or not)
local function holds_lease(cur, token)
  return cur == token or cur == token .. '!'
end
local function enqueue(account, id, priority, front, camp)
  local q
  if priority == 'high' then
    q = p .. ':qh:' .. account
    flag_lease(account)
  else
    local name = 's'
    if camp and camp ~= '' then name = 'c:' .. camp end
    q = source_key(account, name)
    add_source(account, name)
  end
  if front then redis.call('LPUSH', q, id) else redis.call('RPUSH', q, id) end
  schedule(account)
end
-- a campaign's staged jobs for one account become one of the account's sources (O(1) RENAME)
local function go_live(cid, account)
  local staging = p .. ':cst:' .. cid .. ':' .. account
  if redis.call('EXISTS', staging) == 1 then
    redis.call('RENAME', staging, source_key(account, 'c:' .. cid))
    add_source(account, 'c:' .. cid)
    schedule(account)
  end
end
local function wake()
  redis.call('LPUSH', p .. ':wake', '1')
  redis.call('LTRIM', p .. ':wake', 0, 9)
end
-- finished jobs keep their record (ids, history) for the configured retention, then expire
local function retain(jk, ttl, job_only)
  if ttl == nil then ttl = tonumber(redis.call('HGET', p .. ':config', 'retention_s') or '0') end
  if ttl and ttl > 0 then
    redis.call('EXPIRE', jk, ttl)
    if not job_only then redis.call('EXPIRE', jk .. ':h', ttl) end
  end
end
local function dead_letter(jk, id, from, reason, class, err, now, camp, ttl)
  move(jk, from, 'dead', camp)
  redis.call('HSET', jk, 'reason', reason, 'error_class', class, 'error', err, 'dead_at', now, 'updated', now)
  redis.call('ZADD', p .. ':dlq', now, id)
  retain(jk, ttl)
end
-- put a job (back) in its queue, unless its campaign was cancelled meanwhile: then it is cancelled too
local function place(jk, id, account, priority, front, camp, from)
  if camp and camp ~= '' and redis.call('HGET', p .. ':campaign:' .. camp, 'status') == 'cancelled' then
    move(jk, from, 'cancelled', camp)
    retain(jk)
    return false
  end
  if from ~= 'queued' then move(jk, from, 'queued', camp) end
  enqueue(account, id, priority, front, camp)
  return true
end
-- move due scheduled/retrying jobs to their queues, grouped: one RPUSH per queue, one source and sched
-- update per account, one counter update per campaign; returns how many ids it took from the due set
local function promote(now, limit)
  local due = p .. ':due'
  local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
  if #ids == 0 then return 0 end
  redis.call('ZREM', due, unpack(ids))
  -- grouped: one RPUSH per queue, one source and sched update per account, one counter update per campaign
  local queues, order, counts, cstatus = {}, {}, {}, {}
  for _, id in ipairs(ids) do
    local jk = jkey(id)
    local st, account, priority, camp = unpack(redis.call('HMGET', jk, 'state', 'account', 'priority', 'campaign'))
    if st == 'scheduled' or st == 'retrying' then
      local name = nil
      if camp and camp ~= '' then
        if cstatus[camp] == nil then cstatus[camp] = redis.call('HGET', p .. ':campaign:' .. camp, 'status') or '' end
        name = 'c:' .. camp
      end
      if name and cstatus[camp] == 'cancelled' then
        move(jk, st, 'cancelled', camp)
        retain(jk)
      else
        redis.call('HSET', jk, 'state', 'queued', 'updated', now)
        if camp and camp ~= '' then
          local key = camp .. '|' .. st
          counts[key] = (counts[key] or 0) + 1
        end
        local q
        if priority == 'high' then q = p .. ':qh:' .. account else q = source_key(account, name or 's') end
        if not queues[q] then
          queues[q] = {account = account, name = (priority ~= 'high') and (name or 's') or nil, ids = {}}
          order[#order + 1] = q
        end
        local batch = queues[q].ids
        batch[#batch + 1] = id
      end
    end
  end
  for key, n in pairs(counts) do
    local camp, from = string.match(key, '^(.*)|(.*)$')
    local ck = p .. ':campaign:' .. camp
    redis.call('HINCRBY', ck, 'n:' .. from, -n)
    redis.call('HINCRBY', ck, 'n:queued', n)
  end
  for _, q in ipairs(order) do
    local batch = queues[q]
    redis.call('RPUSH', q, unpack(batch.ids))
    if batch.name then add_source(batch.account, batch.name) else flag_lease(batch.account) end
    schedule(batch.account)
  end
  return #ids
end
"""

#: ARGV: prefix, job_id, idem_key|'', idem_ttl_s, now, due_at|'', account, priority, field, value, ...
SUBMIT = (
    PRELUDE
    + r"""
local id, idem, now, due_at, account, priority = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if idem ~= '' then
  local existing = redis.call('GET', p .. ':idem:m:' .. idem)
  if existing then return {0, existing} end
  redis.call('SET', p .. ':idem:m:' .. idem, id, 'EX', tonumber(ARGV[4]))
end
local jk = jkey(id)
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', jk, unpack(fields))
if due_at ~= '' then
  redis.call('HSET', jk, 'state', 'scheduled')
  redis.call('ZADD', p .. ':due', due_at, id)
else
  redis.call('HSET', jk, 'state', 'queued')
  enqueue(account, id, priority, false, '')
  wake()
end
return {1, id, redis.call('HGET', jk, 'state')}
"""
)

#: ARGV: prefix, now, limit. Moves due scheduled/retrying jobs to their account's queue.
#: ARGV: prefix, now, limit. Moves due scheduled/retrying jobs to their account's queue.
PROMOTE_DUE = (
    PRELUDE
    + r"""
return promote(ARGV[2], tonumber(ARGV[3]))
"""
)

#: ARGV: prefix, now (Redis time), promote limit, capacity (sessions the live workers can hold), most due
#: accounts to return. The dispatcher's tick in one round trip: promote what is due, then the free
#: capacity (capacity - sessions out), the accounts due in ``sched`` (at most that many), and when the
#: next one will be. Returns {promoted, free, next ('' = none), account...}.
TICK = (
    PRELUDE
    + r"""
local now, limit, capacity, most = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local promoted = promote(now, limit)
local free = capacity - redis.call('SCARD', p .. ':leased')
local out = {promoted, free, ''}
if free > 0 then
  for _, a in ipairs(redis.call('ZRANGEBYSCORE', p .. ':sched', '-inf', now, 'LIMIT', 0, math.min(free, most))) do
    out[#out + 1] = a
  end
end
local soonest = redis.call('ZRANGE', p .. ':sched', 0, 0, 'WITHSCORES')
if soonest[2] then out[3] = soonest[2] end
return out
"""
)

#: ARGV: prefix, token_base, lease_ttl_ms, now, then per candidate account (the dispatcher's pacing
#: verdict): account, batch, private_at, group_at. Hands an idle, active account's next jobs (up to
#: ``batch``) to a new session when its first job may start now (the group gap applies when that
#: recipient is a ``…@chatroom``; the worker paces the session's later jobs itself): high priority first,
#: then the account's sources in round-robin order (a source that gave a job moves to the back), skipping
#: paused campaigns. Keeps ``sched`` current: a claimed, paused, held or empty account leaves it, one
#: whose head must wait is put back at that head's moment (``private_at`` or ``group_at``).
#: Returns a flat list: account, token, n, flags, campaigns, kinds, id1..idn, ... (flags: one '1'/'0' per
#: id, '1' = a group; campaigns and kinds comma-separated, for operators in Flower).
CLAIM = (
    PRELUDE
    + r"""
local token_base, ttl, now = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local sched = p .. ':sched'
for c = 5, #ARGV, 4 do
  local a, batch = ARGV[c], tonumber(ARGV[c + 1])
  local private_at, group_at = tonumber(ARGV[c + 2]), tonumber(ARGV[c + 3])
  local status = redis.call('HGET', p .. ':account:' .. a, 'status')
  -- an account still in 'leased' has a batch in flight, or a dead one RECOVER has not cleaned up yet
  if batch <= 0 or status == 'paused' or status == 'down'
     or redis.call('EXISTS', p .. ':lease:' .. a) == 1 or redis.call('SISMEMBER', p .. ':leased', a) == 1 then
    redis.call('ZREM', sched, a)
  else
    local ids, flags, camps, kinds = {}, {}, {}, {}
    local blocked = false
    -- the first job must be allowed now; the session's later ones are paced by the worker
    local function take(key)
      local head, to, camp, kind, group
      if #ids == 0 then
        head = redis.call('LINDEX', key, 0)
        if not head then return false end
        to, camp, kind = unpack(redis.call('HMGET', jkey(head), 'to', 'campaign', 'kind'))
        group = string.sub(to or '', -9) == '@chatroom'
        local start_at = group and group_at or private_at
        if now < start_at then
          blocked = start_at
          return false
        end
        redis.call('LPOP', key)
      else
        head = redis.call('LPOP', key)
        if not head then return false end
        to, camp, kind = unpack(redis.call('HMGET', jkey(head), 'to', 'campaign', 'kind'))
        group = string.sub(to or '', -9) == '@chatroom'
      end
      ids[#ids + 1] = head
      flags[#flags + 1] = group and '1' or '0'
      if camp and camp ~= '' then
        if not camps[camp] then
          camps[camp] = redis.call('HGET', p .. ':campaign:' .. camp, 'kind') or ''
        end
        kind = camps[camp]
      end
      if kind and kind ~= '' then kinds[kind] = true end
      return true
    end
    local qh = p .. ':qh:' .. a
    while #ids < batch and take(qh) do end
    local sk = p .. ':src:' .. a
    local sources = redis.call('ZRANGE', sk, 0, -1, 'WITHSCORES')
    local top = 0
    if #sources > 0 then top = tonumber(sources[#sources]) end
    local held = false
    local usable = {}
    for i = 1, #sources, 2 do
      local name = sources[i]
      local ok = true
      if name ~= 's' then
        local cstatus = redis.call('HGET', p .. ':campaign:' .. string.sub(name, 3), 'status')
        if cstatus == 'paused' or cstatus == 'scheduled' then
          ok = false
          held = true
        elseif cstatus ~= 'active' then
          ok = false
          redis.call('ZREM', sk, name)
        end
      end
      if ok then usable[#usable + 1] = {name = name, key = source_key(a, name)} end
    end
    -- one job from each source in turn (campaigns sharing an account alternate within a session too);
    -- a source moves to the back of the order when it gives a job, and leaves it when it runs dry
    local more = #usable > 0
    while more and #ids < batch and not blocked do
      more = false
      for _, src in ipairs(usable) do
        if #ids >= batch or blocked then break end
        if not src.dry then
          if take(src.key) then
            more = true
            top = top + 1
            src.last = top
          elseif not blocked then
            src.dry = true
            redis.call('ZREM', sk, src.name)
          end
        end
      end
    end
    for _, src in ipairs(usable) do
      if src.last and not src.dry then redis.call('ZADD', sk, src.last, src.name) end
    end
    if #ids == 0 then
      if blocked then
        -- the head may start at its own kind's moment (private or group): look again then
        redis.call('ZADD', sched, blocked, a)
      else
        -- nothing ready, or only paused campaigns (resuming one puts the account back)
        redis.call('ZREM', sched, a)
      end
    else
      local token = token_base .. ':' .. a
      redis.call('SET', p .. ':lease:' .. a, token, 'PX', ttl)
      redis.call('RPUSH', p .. ':claimed:' .. a, unpack(ids))
      redis.call('SADD', p .. ':leased', a)
      redis.call('ZREM', sched, a)
      out[#out + 1] = a
      out[#out + 1] = token
      out[#out + 1] = #ids
      out[#out + 1] = table.concat(flags)
      local names = {}
      for name in pairs(camps) do names[#names + 1] = name end
      table.sort(names)
      out[#out + 1] = table.concat(names, ',')
      local kind_names = {}
      for name in pairs(kinds) do kind_names[#kind_names + 1] = name end
      table.sort(kind_names)
      out[#out + 1] = table.concat(kind_names, ',')
      for _, id in ipairs(ids) do out[#out + 1] = id end
    end
  end
end
return out
"""
)

#: ARGV: prefix, account, token, job_id, now, lease_ttl_ms, not_before (0 = the dispatcher's start), known
#: campaigns (comma-separated). Marks one job ``sending`` just before the vendor call, if the session still
#: holds the account's lease, unflagged, and Redis TIME has reached ``not_before`` (the start the worker's
#: pacing chose). Returns {'go', template, redis_now ('' when not_before is 0), job} — ``template`` is the
#: campaign's message, or '=' when the caller named the campaign as known; ``job`` the job hash, flat — or
#: {'early', seconds to wait},
#: {'lost'|'yield'|'skip', why} ('yield': the lease is flagged, see flag_lease: end the session).
BEGIN = (
    PRELUDE
    + r"""
local a, token, id, now, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local not_before, known = tonumber(ARGV[7]), ARGV[8]
local lk = p .. ':lease:' .. a
local cur = redis.call('GET', lk)
if cur ~= token then
  if cur == token .. '!' then return {'yield', 'changed'} end
  return {'lost', ''}
end
redis.call('PEXPIRE', lk, ttl)
local tstr = ''
if not_before > 0 then
  local t = redis.call('TIME')
  local tnow = tonumber(t[1]) + tonumber(t[2]) / 1000000
  if tnow < not_before then return {'early', string.format('%.6f', not_before - tnow)} end
  tstr = string.format('%.6f', tnow)
end
local jk = jkey(id)
local job = redis.call('HGETALL', jk)
local f = {}
for i = 1, #job, 2 do f[job[i]] = job[i + 1] end
local st = f['state']
if not st then
  redis.call('LREM', p .. ':claimed:' .. a, 0, id)
  return {'skip', 'missing'}
end
if st == 'sending' then
  dead_letter(jk, id, 'sending', 'unknown_outcome', 'ambiguous',
    'a worker died during the vendor call; the message may have been sent', now)
  redis.call('LREM', p .. ':claimed:' .. a, 0, id)
  return {'skip', 'unknown_outcome'}
end
if st ~= 'queued' then
  redis.call('LREM', p .. ':claimed:' .. a, 0, id)
  return {'skip', st}
end
local camp = f['campaign']
local template = ''
if camp and camp ~= '' then
  if string.find(',' .. known .. ',', ',' .. camp .. ',', 1, true) then
    template = '='
  else
    template = redis.call('HGET', p .. ':campaign:' .. camp, 'message') or ''
  end
end
local attempts = tonumber(f['attempts'] or '0') + 1
redis.call('HSET', jk, 'state', 'sending', 'lease', token, 'started', now, 'updated', now, 'attempts', attempts)
count(camp, 'queued', 'sending')
f['state'], f['lease'], f['started'], f['updated'], f['attempts'] = 'sending', token, now, now, tostring(attempts)
local flat = {}
for k, v in pairs(f) do flat[#flat + 1] = k; flat[#flat + 1] = v end
return {'go', template, tstr, flat}
"""
)

#: ARGV: prefix, account, token, ttl_ms. Renews a batch's lease (between quick retries); 1, or 0 if lost.
TOUCH = r"""
local lk = ARGV[1] .. ':lease:' .. ARGV[2]
local cur = redis.call('GET', lk)
if cur ~= ARGV[3] and cur ~= ARGV[3] .. '!' then return 0 end
redis.call('PEXPIRE', lk, tonumber(ARGV[4]))
return 1
"""

#: ARGV: prefix, account, token, job_id, now, outcome, history_json, retention_s, then the pacing record of
#: the call (a :class:`worker.store.ledger.PaceRecord`, which the worker also applies to its own copy): called
#: (0|1: a vendor call was
#: made), end (when the answer arrived, on Redis's clock as the worker reads it: the latest that clock
#: can read, its last TIME reading plus the local time since that call left: never earlier than the
#: truth, so the gap after it is never short), jitter
#: fraction, slow-down ('' = unchanged, else the new factor, stamped at the end), local day, sends on that
#: day, window length to keep (0 = no window), vendor ('' = no vendor-wide rate), then by outcome:
#:   sent:    field, value, ...             (vendor ids)
#:   retry:   due_at, error_class, error
#:   dead:    reason, error_class, error
#:   requeue: '', error_class, error        (account down: back to the head of the queue, not counted)
#: The pacing record is written first, even when the lease was lost meanwhile: the call happened and the
#: next one must wait for it.
#: Returns {'ok' | 'stale', end time}: 'stale' when the job is no longer this batch's (history kept anyway).
FINISH = (
    PRELUDE
    + r"""
local a, token, id, now, outcome = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttl = tonumber(ARGV[8])
local called, ended, fraction, slow, day, day_n = ARGV[9], tonumber(ARGV[10]), ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local keep, vendor = tonumber(ARGV[15]), ARGV[16]
local X = 17
local tstr = ''
if called == '1' then
  local tend = ended
  tstr = string.format('%.6f', tend)
  local pk = p .. ':pace:' .. a
  local fields = {'last_end', tstr, 'r', fraction, 'day', day, 'day_n', day_n}
  if slow ~= '' then
    fields[#fields + 1] = 'slow'; fields[#fields + 1] = slow
    fields[#fields + 1] = 'slow_at'; fields[#fields + 1] = tstr
  end
  redis.call('HSET', pk, unpack(fields))
  if keep > 0 and redis.call('LPUSH', pk .. ':win', tstr) > 2 * keep then
    redis.call('LTRIM', pk .. ':win', 0, keep - 1)
  end
  if vendor ~= '' then
    local vk = p .. ':vpace:' .. vendor
    redis.call('ZADD', vk, tend, tstr .. ':' .. token)
    redis.call('ZREMRANGEBYSCORE', vk, '-inf', tend - 5)
    redis.call('EXPIRE', vk, 10)
  end
end
local jk = jkey(id)
local hk = p .. ':job:' .. id .. ':h'
local st, lease, priority, camp, last_error, attempts, replays =
  unpack(redis.call('HMGET', jk, 'state', 'lease', 'priority', 'campaign', 'last_error', 'attempts', 'replays'))
if lease ~= token or (st ~= 'sending' and st ~= 'dead') then
  redis.call('RPUSH', hk, ARGV[7])  -- the attempt is on the record even when the job is no longer ours
  return {'stale', tstr}
end
redis.call('LREM', p .. ':claimed:' .. a, 0, id)
if st == 'dead' then
  if outcome ~= 'sent' or redis.call('HGET', jk, 'reason') ~= 'unknown_outcome' then
    redis.call('RPUSH', hk, ARGV[7])
    return {'stale', tstr}
  end
  -- recovered as an unknown outcome while this call was still running: now we know it went out
  redis.call('ZREM', p .. ':dlq', id)
  redis.call('HDEL', jk, 'reason', 'error_class', 'error', 'dead_at')
end
-- the history: a job sent at its first attempt keeps that one entry in its hash (field h0); any other
-- goes to its history list (Ledger.history reads both)
local first = outcome == 'sent' and st == 'sending' and attempts == '1' and not replays
if not first then redis.call('RPUSH', hk, ARGV[7]) end
if outcome == 'sent' then
  local fields = {'state', 'sent', 'updated', now, 'sent_at', now}
  if first then fields[#fields + 1] = 'h0'; fields[#fields + 1] = ARGV[7] end
  for i = X, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', jk, unpack(fields))
  count(camp, st, 'sent')
  if last_error then redis.call('HDEL', jk, 'last_error') end
  retain(jk, ttl, first)
elseif outcome == 'retry' then
  redis.call('HSET', jk, 'state', 'retrying', 'updated', now, 'last_error', ARGV[X + 2],
    'last_error_class', ARGV[X + 1])
  count(camp, st, 'retrying')
  redis.call('HINCRBY', jk, 'n_' .. ARGV[X + 1], 1)
  redis.call('ZADD', p .. ':due', ARGV[X], id)
elseif outcome == 'dead' then
  dead_letter(jk, id, st, ARGV[X], ARGV[X + 1], ARGV[X + 2], now, camp, ttl)
elseif outcome == 'requeue' then
  redis.call('HINCRBY', jk, 'attempts', -1)
  redis.call('HSET', jk, 'updated', now, 'last_error', ARGV[X + 2], 'last_error_class', ARGV[X + 1])
  place(jk, id, a, priority, true, camp, st)
end
return {'ok', tstr}
"""
)

#: ARGV: prefix, account, token, next_at. Ends a session: its unprocessed jobs go back to the head of
#: their queue, and the account waits in ``sched`` until ``next_at`` (its next sendable moment, from the
#: worker's pacing) if it still has jobs. Returns how many claimed ids were still listed, or -1 when the
#: lease was lost (RECOVER has already dealt with the batch).
RELEASE = (
    PRELUDE
    + r"""
local a, token, next_at = ARGV[2], ARGV[3], ARGV[4]
local lk = p .. ':lease:' .. a
if not holds_lease(redis.call('GET', lk), token) then return -1 end
local ck = p .. ':claimed:' .. a
local ids = redis.call('LRANGE', ck, 0, -1)
local now_s = redis.call('TIME')[1]
for i = #ids, 1, -1 do
  local jk = jkey(ids[i])
  local st, priority, camp = unpack(redis.call('HMGET', jk, 'state', 'priority', 'campaign'))
  if st == 'queued' then
    place(jk, ids[i], a, priority, true, camp, 'queued')
  elseif st == 'sending' then
    -- the batch ended without recording this send (an unexpected error mid-call): outcome unknown
    dead_letter(jk, ids[i], 'sending', 'unknown_outcome', 'ambiguous',
      'the send was interrupted before its outcome was recorded; the message may have been sent', now_s)
  end
end
redis.call('DEL', ck, lk)
redis.call('SREM', p .. ':leased', a)
if redis.call('LLEN', p .. ':qh:' .. a) > 0 or redis.call('ZCARD', p .. ':src:' .. a) > 0 then
  redis.call('ZADD', p .. ':sched', next_at, a)
  wake()
end
return #ids
"""
)

#: ARGV: prefix, now. For every account whose lease expired with jobs still claimed: untouched jobs go
#: back to the head of the queue, a ``sending`` job becomes an unknown outcome (dead-lettered for review).
RECOVER = (
    PRELUDE
    + r"""
local now = ARGV[2]
local requeued, unknown = 0, 0
for _, a in ipairs(redis.call('SMEMBERS', p .. ':leased')) do
  if redis.call('EXISTS', p .. ':lease:' .. a) == 0 then
    local ck = p .. ':claimed:' .. a
    local ids = redis.call('LRANGE', ck, 0, -1)
    for i = #ids, 1, -1 do
      local jk = jkey(ids[i])
      local st, priority, camp = unpack(redis.call('HMGET', jk, 'state', 'priority', 'campaign'))
      if st == 'sending' then
        dead_letter(jk, ids[i], 'sending', 'unknown_outcome', 'ambiguous',
          'the worker holding this send died; the message may have been sent', now)
        unknown = unknown + 1
      elseif st == 'queued' then
        if place(jk, ids[i], a, priority, true, camp, 'queued') then requeued = requeued + 1 end
      end
    end
    redis.call('DEL', ck)
    redis.call('SREM', p .. ':leased', a)
    redis.call('ZADD', p .. ':sched', 0, a)
  end
end
return {requeued, unknown}
"""
)

#: ARGV: prefix, job_id, now, force ('1' allows replaying an unknown outcome). Dead job -> queued, same id.
REPLAY = (
    PRELUDE
    + r"""
local id, now, force = ARGV[2], ARGV[3], ARGV[4]
local jk = jkey(id)
local st, reason, account, priority, camp =
  unpack(redis.call('HMGET', jk, 'state', 'reason', 'account', 'priority', 'campaign'))
if not st then return {'missing'} end
if st ~= 'dead' then return {'not_dead', st} end
if redis.call('HGET', jk, 'dismissed') == '1' then return {'deleted'} end
if reason == 'unknown_outcome' and force ~= '1' then return {'unknown_outcome'} end
if camp and camp ~= '' and redis.call('HGET', p .. ':campaign:' .. camp, 'status') == 'cancelled' then
  return {'campaign_cancelled'}
end
if redis.call('HEXISTS', jk, 'new_msg_id') == 1 or redis.call('HEXISTS', jk, 'sent_at') == 1 then
  return {'already_sent'}
end
redis.call('ZREM', p .. ':dlq', id)
redis.call('PERSIST', jk)
redis.call('PERSIST', jk .. ':h')
move(jk, 'dead', 'queued')
redis.call('HDEL', jk, 'reason', 'error_class', 'error', 'dead_at', 'n_transient', 'n_throttled', 'n_failure',
  'n_ambiguous')
redis.call('HINCRBY', jk, 'replays', 1)
redis.call('HSET', jk, 'updated', now)
local entry = cjson.encode({event = 'replayed', at = tonumber(now), from_reason = reason})
redis.call('RPUSH', p .. ':job:' .. id .. ':h', entry)
enqueue(account, id, priority, false, camp)
wake()
return {'ok'}
"""
)

#: ARGV: prefix, job_id, now. Cancels a job that has not started sending. Returns the previous state.
CANCEL = (
    PRELUDE
    + r"""
local id, now = ARGV[2], ARGV[3]
local jk = jkey(id)
local st = redis.call('HGET', jk, 'state')
if st == 'queued' or st == 'scheduled' or st == 'retrying' then
  move(jk, st, 'cancelled')
  retain(jk)
  redis.call('HSET', jk, 'updated', now, 'cancelled_at', now)
  redis.call('ZREM', p .. ':due', id)
end
return st or ''
"""
)

# --- campaigns -------------------------------------------------------------------------------------------
# A campaign's jobs are written in chunks first (hashes, the campaign's job list, one staging list per
# account), invisible to the dispatcher; COMMIT then makes the whole campaign live in one atomic step.

#: ARGV: prefix, cid, idem_key|'', idem_ttl_s, now, status (active|scheduled), send_at|'', total, accounts...
CAMPAIGN_COMMIT = (
    PRELUDE
    + r"""
local cid, idem, now, status, send_at, total = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if idem ~= '' then
  local existing = redis.call('GET', p .. ':idem:c:' .. idem)
  if existing then return {0, existing} end
  redis.call('SET', p .. ':idem:c:' .. idem, cid, 'EX', tonumber(ARGV[4]))
end
local ck = p .. ':campaign:' .. cid
local counter = 'n:queued'
if status == 'scheduled' then counter = 'n:scheduled' end
redis.call('HSET', ck, 'status', status, counter, total, 'committed', now)
redis.call('ZADD', p .. ':campaigns', now, cid)
if status == 'active' then
  for i = 9, #ARGV do go_live(cid, ARGV[i]) end
  wake()
else
  redis.call('ZADD', p .. ':due_campaigns', send_at, cid)
end
return {1, cid}
"""
)

#: ARGV: prefix, cid, now, start, stop. Scheduled -> queued for one slice of a campaign's jobs.
CAMPAIGN_ACTIVATE_CHUNK = (
    PRELUDE
    + r"""
local cid, now = ARGV[2], ARGV[3]
local n = 0
for _, id in ipairs(redis.call('LRANGE', p .. ':campaign:' .. cid .. ':jobs', ARGV[4], ARGV[5])) do
  local jk = jkey(id)
  if redis.call('HGET', jk, 'state') == 'scheduled' then
    move(jk, 'scheduled', 'queued')
    n = n + 1
  end
end
return n
"""
)

#: ARGV: prefix, cid, now, accounts... Makes a scheduled campaign's staged jobs dispatchable.
CAMPAIGN_ACTIVATE_FINAL = (
    PRELUDE
    + r"""
local cid, now = ARGV[2], ARGV[3]
local ck = p .. ':campaign:' .. cid
local status = redis.call('HGET', ck, 'status')
if status ~= 'scheduled' then
  -- paused (resume puts it back) or cancelled: not due any more
  redis.call('ZREM', p .. ':due_campaigns', cid)
  return 0
end
for i = 4, #ARGV do go_live(cid, ARGV[i]) end
redis.call('HSET', ck, 'status', 'active', 'activated', now)
redis.call('ZREM', p .. ':due_campaigns', cid)
wake()
return 1
"""
)

#: ARGV: prefix, cid, action (pause|resume|cancel), now, accounts... Returns the previous status, or
#: '!' .. status when the action does not apply.
CAMPAIGN_STATUS = (
    PRELUDE
    + r"""
local cid, action, now = ARGV[2], ARGV[3], ARGV[4]
local ck = p .. ':campaign:' .. cid
local st = redis.call('HGET', ck, 'status')
if not st then return '!missing' end
if action == 'pause' then
  if st ~= 'active' and st ~= 'scheduled' then return '!' .. st end
  redis.call('HSET', ck, 'status', 'paused', 'paused_from', st, 'updated', now)
  for i = 5, #ARGV do flag_lease(ARGV[i]) end
elseif action == 'resume' then
  if st ~= 'paused' then return '!' .. st end
  local back = redis.call('HGET', ck, 'paused_from') or 'active'
  redis.call('HSET', ck, 'status', back, 'updated', now)
  if back == 'scheduled' then
    redis.call('ZADD', p .. ':due_campaigns', tonumber(redis.call('HGET', ck, 'send_at') or now) or now, cid)
  end
  for i = 5, #ARGV do schedule(ARGV[i]) end
  wake()
elseif action == 'cancel' then
  if st == 'cancelled' then return '!' .. st end
  redis.call('HSET', ck, 'status', 'cancelled', 'cancelled_at', now, 'updated', now)
  redis.call('ZREM', p .. ':due_campaigns', cid)
  for i = 5, #ARGV do flag_lease(ARGV[i]) end
end
return st
"""
)

#: ARGV: prefix, cid, now, start, stop. Cancels the unsent jobs of one slice of a cancelled campaign.
CAMPAIGN_CANCEL_CHUNK = (
    PRELUDE
    + r"""
local cid, now = ARGV[2], ARGV[3]
local n = 0
for _, id in ipairs(redis.call('LRANGE', p .. ':campaign:' .. cid .. ':jobs', ARGV[4], ARGV[5])) do
  local jk = jkey(id)
  local st = redis.call('HGET', jk, 'state')
  if st == 'queued' or st == 'scheduled' or st == 'retrying' then
    move(jk, st, 'cancelled')
    retain(jk)
    redis.call('HSET', jk, 'cancelled_at', now)
    redis.call('ZREM', p .. ':due', id)
    n = n + 1
  end
end
return n
"""
)

#: ARGV: prefix, account. Flags the account's session, if one is in flight, to end at its next job (its
#: status or limits changed): see flag_lease in the prelude.
FLAG_SESSION = (
    PRELUDE
    + r"""
flag_lease(ARGV[2])
return 1
"""
)

#: ARGV: prefix, account, token, ttl_ms. Takes the account's lease for an operator's probe (the resume
#: check): only when no session holds it and no dead one awaits recovery, so a probe is never a second
#: call in flight for the account. Returns 1, or 0 when the account is busy.
PROBE_BEGIN = r"""
local p, a = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', p .. ':leased', a) == 1 then return 0 end
if redis.call('SET', p .. ':lease:' .. a, ARGV[3], 'NX', 'PX', tonumber(ARGV[4])) then return 1 end
return 0
"""

#: ARGV: prefix, account, token, called (0|1). Ends a probe: when it made a vendor call, the account's
#: pacing records it (end = Redis TIME, after the answer: the next send waits its full gap), then the
#: lease is freed. Returns 1, or 0 when the lease was no longer the probe's.
PROBE_END = r"""
local p, a = ARGV[1], ARGV[2]
local lk = p .. ':lease:' .. a
if ARGV[4] == '1' then
  local t = redis.call('TIME')
  local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
  redis.call('HSET', p .. ':pace:' .. a, 'last_end', now)
  redis.call('LPUSH', p .. ':pace:' .. a .. ':win', now)
end
if redis.call('GET', lk) ~= ARGV[3] then return 0 end
redis.call('DEL', lk)
return 1
"""
