--[[
  CLAIM: hand an idle, active account's next jobs (up to `batch`) to a new session when its first job
  may start now (the group gap applies when that recipient is a `…@chatroom`; the worker paces the
  session's later jobs itself): high priority first, then the account's sources in round-robin order (a
  source that gave a job moves to the back), skipping paused campaigns. Keeps `sched` current: a claimed,
  paused, held or empty account leaves it, one whose head must wait is put back at that head's moment.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] token_base (the lease tokens are token_base .. ':' .. account)
        [3] lease_ttl_ms  [4] now
        [5..] per candidate account, four each (the dispatcher's pacing verdict): account, batch,
        private_at, group_at
  Returns a flat list, per claimed account: account, token, n, flags, campaigns, kinds, id1..idn (flags:
  one '1'/'0' per id, '1' = a group; campaigns and kinds comma-separated, for operators in Flower).
]]
--!include prelude
local token_base, ttl, now = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local sched = key_sched()
for c = 5, #ARGV, 4 do
  local a, batch = ARGV[c], tonumber(ARGV[c + 1])
  local private_at, group_at = tonumber(ARGV[c + 2]), tonumber(ARGV[c + 3])
  local status = redis.call('HGET', key_account(a), 'status')
  -- an account still in 'leased' has a batch in flight, or a dead one RECOVER has not cleaned up yet
  if batch <= 0 or status == 'paused' or status == 'down'
     or redis.call('EXISTS', key_lease(a)) == 1 or redis.call('SISMEMBER', key_leased(), a) == 1 then
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
        to, camp, kind = unpack(redis.call('HMGET', key_job(head), 'to', 'campaign', 'kind'))
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
        to, camp, kind = unpack(redis.call('HMGET', key_job(head), 'to', 'campaign', 'kind'))
        group = string.sub(to or '', -9) == '@chatroom'
      end
      ids[#ids + 1] = head
      flags[#flags + 1] = group and '1' or '0'
      if camp and camp ~= '' then
        if not camps[camp] then
          camps[camp] = redis.call('HGET', key_campaign(camp), 'kind') or ''
        end
        kind = camps[camp]
      end
      if kind and kind ~= '' then kinds[kind] = true end
      return true
    end
    local qh = key_queue_high(a)
    while #ids < batch and take(qh) do end
    local sk = key_sources(a)
    local sources = redis.call('ZRANGE', sk, 0, -1, 'WITHSCORES')
    local top = 0
    if #sources > 0 then top = tonumber(sources[#sources]) end
    local held = false
    local usable = {}
    for i = 1, #sources, 2 do
      local name = sources[i]
      local ok = true
      if name ~= 's' then
        local cstatus = redis.call('HGET', key_campaign(string.sub(name, 3)), 'status')
        if cstatus == CAMPAIGN.PAUSED or cstatus == CAMPAIGN.SCHEDULED then
          ok = false
          held = true
        elseif cstatus ~= CAMPAIGN.ACTIVE then
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
      redis.call('SET', key_lease(a), token, 'PX', ttl)
      redis.call('RPUSH', key_claimed(a), unpack(ids))
      redis.call('SADD', key_leased(), a)
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
