-- Helpers every state-changing script shares (scripts with a `--!include prelude` line after their header).
-- Key names come from worker/store/keys.py: the loader defines key_<name>(...) for the keys a script uses;
-- job states, outcomes, reasons and campaign statuses are named STATE.<MEMBER>, DEAD_REASON.<MEMBER>,
-- CAMPAIGN.<MEMBER>... after the enums of worker/store/vocabulary.py; the loader writes their values in
-- (tests/test_layout.py refuses them spelled by hand).
-- a campaign's per-state counters follow each of its jobs' transitions, so they add up to its total
local function count(camp, from, to)
  if camp and camp ~= '' then
    local ck = key_campaign(camp)
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
  if name == 's' then return key_queue(account) end
  return key_campaign_queue(string.sub(name, 3), account)
end
local function add_source(account, name)
  local sk = key_sources(account)
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
  if redis.call('SISMEMBER', key_leased(), account) == 0 then
    redis.call('ZADD', key_sched(), 'NX', 0, account)
  end
end
-- a lease value ending in '!' tells the session holding it that something it was claimed under changed
-- (a high-priority job arrived, the account or one of its campaigns was paused, cancelled or edited): it
-- ends at its next job and the next session is claimed under the new state. So BEGIN need not re-read the
-- account's status, its campaigns' status or the high-priority queue for every send.
local function flag_lease(account)
  local lk = key_lease(account)
  local cur = redis.call('GET', lk)
  if cur and string.sub(cur, -1) ~= '!' then redis.call('SET', lk, cur .. '!', 'KEEPTTL') end
end
-- pause a campaign (an operator's pause or an auto-pause, with its reason): CLAIM skips its sources and a
-- session holding one of its accounts ends at its next job
local function pause_campaign(cid, from, reason, now, accounts)
  redis.call('HSET', key_campaign(cid), 'status', CAMPAIGN.PAUSED, 'paused_from', from, 'updated', now,
    'pause_reason', reason)
  for _, account in ipairs(accounts) do flag_lease(account) end
end
-- the operator key that created something was revoked (opkey:{name} gone) or is another key now (a new key
-- given the same name): what it created is not that key's any more. owner '' names no key (bootstrap token)
local function owner_gone(owner, digest)
  return owner ~= '' and redis.call('HGET', key_operator_key(owner), 'digest') ~= digest
end
-- a single message (or test send) whose key was revoked since it was submitted (submit.lua stores the key's
-- digest as owner_key): BEGIN cancels it, a replay is an admin's. A campaign's jobs go by their campaign.
local function message_owner_gone(camp, created_by, owner_key)
  return (not camp or camp == '') and owner_key ~= nil and owner_key ~= false
    and owner_gone(created_by or '', owner_key)
end
-- the key that created a campaign was revoked: paused if it would send (a draft, a paused one: flagged only),
-- and flagged owner_revoked, so only an admin resumes or starts it
local function flag_owner_revoked(cid, st, now, accounts)
  if st == CAMPAIGN.ACTIVE or st == CAMPAIGN.SCHEDULED then
    pause_campaign(cid, st, 'the key that created it was revoked: an admin may resume it', now, accounts)
  end
  redis.call('HSET', key_campaign(cid), 'owner_revoked', '1')
end
-- the lease is this session's (flagged or not)
local function holds_lease(cur, token)
  return cur == token or cur == token .. '!'
end
local function enqueue(account, id, priority, front, camp)
  local q
  if priority == 'high' then
    q = key_queue_high(account)
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
  local staging = key_campaign_staging(cid, account)
  if redis.call('EXISTS', staging) == 1 then
    redis.call('RENAME', staging, source_key(account, 'c:' .. cid))
    add_source(account, 'c:' .. cid)
    schedule(account)
  end
end
local function wake()
  redis.call('LPUSH', key_wake(), '1')
  redis.call('LTRIM', key_wake(), 0, 9)
end
-- finished jobs keep their record (ids, history) for the configured retention, then expire
local function retain(id, ttl, job_only)
  if ttl == nil then ttl = tonumber(redis.call('HGET', key_config(), 'retention_s') or '0') end
  if ttl and ttl > 0 then
    redis.call('EXPIRE', key_job(id), ttl)
    if not job_only then redis.call('EXPIRE', key_history(id), ttl) end
  end
end
-- Recall. A revoke is a job of its own (id 'r' .. the sent job's id, `op` revoke, `target` that job),
-- high priority on the sending account: a session runs it like a send (lease, pacing), so it counts
-- against the account's limits and goes before its other sends. The sent job keeps the outcome (`recall`:
-- pending, then recalled, too_late, unsupported or failed, with `recall_error`) and a history entry; its
-- campaign counts them (`rc:requested`, `rc:<outcome>`).
local function recall_outcome(target, outcome, err, now)
  local tk = key_job(target)
  local before, camp = unpack(redis.call('HMGET', tk, 'recall', 'campaign'))
  if not before then return end  -- expired meanwhile
  redis.call('HSET', tk, 'recall', outcome, 'recall_at', now, 'recall_error', err or '')
  if outcome == RECALL.RECALLED then redis.call('HSET', tk, 'revoked_at', now) end
  local event = 'not_revoked'
  if outcome == RECALL.RECALLED then event = 'revoked' end
  local entry = {event = event, outcome = outcome, at = tonumber(now)}
  if err and err ~= '' then entry.error = err end
  redis.call('RPUSH', key_history(target), cjson.encode(entry))
  retain(target)
  if camp and camp ~= '' and redis.call('EXISTS', key_campaign(camp)) == 1 then
    local ck = key_campaign(camp)
    -- a late answer may correct an outcome (an unknown one that did arrive): move the count, never add one
    if before ~= RECALL.PENDING then redis.call('HINCRBY', ck, 'rc:' .. before, -1) end
    redis.call('HINCRBY', ck, 'rc:' .. outcome, 1)
  end
end
-- Ask for the revoke of one sent job: decided at once when its vendor has no revoke (`unsupported`, a
-- comma-separated list) or the window after its createTime (its sent_at when the vendor gave none) has
-- passed; else a revoke job is queued ahead of the account's sends. Returns the outcome so far ('pending'
-- when queued), or false when the job was not sent or its revoke was already asked for (exactly once).
local function request_revoke(id, now, window, unsupported)
  local jk = key_job(id)
  local st, recall, account, to, vendor, created, sent_at, camp, part = unpack(redis.call('HMGET', jk,
    'state', 'recall', 'account', 'to', 'vendor', 'create_time', 'sent_at', 'campaign', 'part'))
  -- a sequence stopped after some parts went out (dead, `part` > 0) has those parts to revoke too
  if st == STATE.DEAD and (tonumber(part) or 0) > 0 then st = STATE.SENT end
  if st ~= STATE.SENT or (recall and recall ~= '') then return false end
  redis.call('HSET', jk, 'recall', RECALL.PENDING)
  if camp and camp ~= '' then redis.call('HINCRBY', key_campaign(camp), 'rc:requested', 1) end
  local base = tonumber(created or '') or 0
  if base <= 0 then base = tonumber(sent_at or '') or 0 end
  local deadline = base + window
  vendor = vendor or ''
  if string.find(',' .. unsupported .. ',', ',' .. vendor .. ',', 1, true) then
    recall_outcome(id, RECALL.UNSUPPORTED, vendor .. ' has no documented revoke', now)
    return RECALL.UNSUPPORTED
  end
  if tonumber(now) > deadline then
    recall_outcome(id, RECALL.TOO_LATE, string.format('the revoke window (%gs) ended at %.3f', window, deadline), now)
    return RECALL.TOO_LATE
  end
  local rid = 'r' .. id
  redis.call('HSET', key_job(rid), 'op', 'revoke', 'target', id, 'account', account, 'to', to,
    'priority', 'high', 'state', STATE.QUEUED, 'attempts', '0', 'created', now, 'updated', now,
    'deadline', string.format('%.3f', deadline))
  enqueue(account, rid, 'high', false, '')
  return RECALL.PENDING
end
-- The pacing record of a vendor call (FINISH and a sequence's PART): written even when the lease was lost
-- meanwhile, since the call happened and the next one must wait for it. Returns the end time ('' when no
-- call was made) and the account's throttling answers in a row, this call included.
local function record_pace(a, token, called, ended, fraction, slow, day, day_n, keep, vendor)
  local tstr = ''
  local throttles = 0
  if called == '1' then
    local tend = ended
    tstr = string.format('%.6f', tend)
    local pk = key_pace(a)
    local fields = {'last_end', tstr, 'r', fraction, 'day', day, 'day_n', day_n}
    if slow ~= '' then
      fields[#fields + 1] = 'slow'; fields[#fields + 1] = slow
      fields[#fields + 1] = 'slow_at'; fields[#fields + 1] = tstr
    else
      fields[#fields + 1] = 'throttled_n'; fields[#fields + 1] = '0'  -- any other answer ends the run
    end
    redis.call('HSET', pk, unpack(fields))
    -- a new slow-down is recorded exactly for a throttling answer: count them in a row
    if slow ~= '' then throttles = redis.call('HINCRBY', pk, 'throttled_n', 1) end
    if keep > 0 and redis.call('LPUSH', key_pace_window(a), tstr) > 2 * keep then
      redis.call('LTRIM', key_pace_window(a), 0, keep - 1)
    end
    if vendor ~= '' then
      local vk = key_vendor_pace(vendor)
      redis.call('ZADD', vk, tend, tstr .. ':' .. token)
      redis.call('ZREMRANGEBYSCORE', vk, '-inf', tend - VENDOR_WINDOW_S)
      redis.call('EXPIRE', vk, math.ceil(2 * VENDOR_WINDOW_S))
    end
  end
  return tstr, throttles
end
local function dead_letter(jk, id, from, reason, class, err, now, camp, ttl)
  move(jk, from, STATE.DEAD, camp)
  redis.call('HSET', jk, 'reason', reason, 'error_class', class, 'error', err, 'dead_at', now, 'updated', now)
  local target = redis.call('HGET', jk, 'target')
  if target then
    -- a revoke that may or may not have reached the vendor: failed on its message, never replayed
    if reason == DEAD_REASON.UNKNOWN_OUTCOME then
      -- the cause, without what it means for a send: the message itself was sent before
      err = 'outcome unknown, not repeated (the revoke may have been done): '
        .. string.gsub(err, '; the message may have been sent$', '')
    end
    recall_outcome(target, RECALL.FAILED, err, now)
  else
    redis.call('ZADD', key_dlq(), now, id)
  end
  retain(id, ttl)
end
-- put a job (back) in its queue, unless its campaign was cancelled meanwhile: then it is cancelled too
local function place(jk, id, account, priority, front, camp, from)
  if camp and camp ~= '' and redis.call('HGET', key_campaign(camp), 'status') == CAMPAIGN.CANCELLED then
    move(jk, from, STATE.CANCELLED, camp)
    retain(id)
    return false
  end
  if from ~= STATE.QUEUED then move(jk, from, STATE.QUEUED, camp) end
  enqueue(account, id, priority, front, camp)
  return true
end
-- move due scheduled/retrying jobs to their queues, grouped: one RPUSH per queue, one source and sched
-- update per account, one counter update per campaign; returns how many ids it took from the due set
local function promote(now, limit)
  local due = key_due()
  local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
  if #ids == 0 then return 0 end
  redis.call('ZREM', due, unpack(ids))
  -- grouped: one RPUSH per queue, one source and sched update per account, one counter update per campaign
  local queues, order, counts, cstatus = {}, {}, {}, {}
  for _, id in ipairs(ids) do
    local jk = key_job(id)
    local st, account, priority, camp = unpack(redis.call('HMGET', jk, 'state', 'account', 'priority', 'campaign'))
    if st == STATE.SCHEDULED or st == STATE.RETRYING then
      local name = nil
      if camp and camp ~= '' then
        if cstatus[camp] == nil then cstatus[camp] = redis.call('HGET', key_campaign(camp), 'status') or '' end
        name = 'c:' .. camp
      end
      if name and cstatus[camp] == CAMPAIGN.CANCELLED then
        move(jk, st, STATE.CANCELLED, camp)
        retain(id)
      else
        redis.call('HSET', jk, 'state', STATE.QUEUED, 'updated', now)
        if camp and camp ~= '' then
          local key = camp .. '|' .. st
          counts[key] = (counts[key] or 0) + 1
        end
        local q
        if priority == 'high' then q = key_queue_high(account) else q = source_key(account, name or 's') end
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
    local ck = key_campaign(camp)
    redis.call('HINCRBY', ck, 'n:' .. from, -n)
    redis.call('HINCRBY', ck, 'n:' .. STATE.QUEUED, n)
  end
  for _, q in ipairs(order) do
    local batch = queues[q]
    redis.call('RPUSH', q, unpack(batch.ids))
    if batch.name then add_source(batch.account, batch.name) else flag_lease(batch.account) end
    schedule(batch.account)
  end
  return #ids
end
-- an idempotency key answers with the id it first stood for ('m': messages, 'c': campaigns): that id if
-- the key is taken, else nil after claiming it for `id` (for ttl seconds); '' = no key
local function claim_idempotency(kind, idem, id, ttl)
  if idem == '' then return nil end
  local existing = redis.call('GET', key_idempotency(kind, idem))
  if existing then return existing end
  redis.call('SET', key_idempotency(kind, idem), id, 'EX', tonumber(ttl))
  return nil
end
