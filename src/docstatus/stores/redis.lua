-- The docstatus Redis store, server side: atomic primitives over stored records (see
-- redis.py for the data layout and the protocol). Nothing here reads a record: the
-- client computes the record's text and everything the indexes need, and this code
-- checks a version, then writes, indexes, logs and publishes, in one atomic step.
--
-- This is a Redis Functions library (Redis 7+), loaded once; for older servers
-- redis.py turns the same code into a script for EVALSHA (the last line is where
-- the two differ). Every operation takes the key prefix as its first argument.

local LOG_SIZE = __LOG_SIZE__
local TALLY_SECONDS = __TALLY_SECONDS__

-- The key prefix and the keys of the store being called (every call names its prefix).
local P, K_DOC, K_SEQ, K_RECENT, K_ACTIVE, K_FINISHED, K_COUNTS, K_LOG, CHANNEL
local K_LEASES, K_LEASE_EPOCHS, K_LEASE_WORKERS, K_WORKERS, K_WORKERS_SEEN, K_WORKERS_EXPIRY, K_TALLY

local function use_prefix(prefix)
  if prefix == P then return end
  P, K_DOC = prefix, prefix .. 'doc:'
  K_SEQ, K_RECENT, K_ACTIVE = P .. 'seq', P .. 'recent', P .. 'active'
  K_FINISHED, K_COUNTS, K_LOG, CHANNEL = P .. 'finished', P .. 'counts', P .. 'log', P .. 'changes'
  K_LEASES, K_LEASE_EPOCHS, K_LEASE_WORKERS = P .. 'leases', P .. 'lease_epochs', P .. 'lease_workers'
  K_WORKERS, K_WORKERS_SEEN, K_WORKERS_EXPIRY = P .. 'workers', P .. 'workers_seen', P .. 'workers_expiry'
  K_TALLY = P .. 'tally:'
end

-- The server's clock, in epoch seconds: the only clock lease times use.
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- A lease's expiry: the server's clock plus the lease's seconds (the client's number, as text).
local function expiry(seconds)
  return now() + tonumber(seconds)
end

-- The lease index move of a change, A[j .. j + 3] as the client computed them: 'set' (with
-- the epoch, the worker and the lease's seconds), 'del', or '' for none.
local function move_lease(doc_id, A, j)
  local op = A[j]
  if op == 'set' then
    redis.call('ZADD', K_LEASES, expiry(A[j + 3]), doc_id)
    redis.call('HSET', K_LEASE_EPOCHS, doc_id, A[j + 1])
    redis.call('HSET', K_LEASE_WORKERS, doc_id, A[j + 2])
  elseif op == 'del' then
    redis.call('ZREM', K_LEASES, doc_id)
    redis.call('HDEL', K_LEASE_EPOCHS, doc_id)
    redis.call('HDEL', K_LEASE_WORKERS, doc_id)
  end
end

-- The throughput counters of a change, A[j .. j + 2] as the client computed them: the
-- minute the document ended in ('' or absent for none), the field to count it in ('c' or
-- 'f'), and its pages. One hash per minute, kept TALLY_SECONDS after its last count.
local function tally(A, j)
  local minute = A[j]
  if minute == nil or minute == '' then return end
  local key = K_TALLY .. minute
  redis.call('HINCRBY', key, A[j + 1], 1)
  redis.call('HINCRBY', key, 'p', A[j + 2])
  redis.call('EXPIRE', key, TALLY_SECONDS)
end

-- Whether the lease index entry of doc_id has the given epoch and has expired.
local function lease_expired(doc_id, epoch)
  if redis.call('HGET', K_LEASE_EPOCHS, doc_id) ~= epoch then return false end
  local expires = redis.call('ZSCORE', K_LEASES, doc_id)
  return expires ~= false and tonumber(expires) < now()
end

-- The listing index moves of a change, A[j ..] as the client computed them, four at a time:
-- a slot number, an index key (under the prefix), a score ('' to remove the member, '#' for
-- the change's seq) and a member. The record's hash remembers each slot's last index and
-- member (fields x<slot>, y<slot>), so that removing the record needs no reading of its text.
local function move_indexes(key, seq, A, j)
  for k = j, #A, 4 do
    local slot, index, score, member = A[k], A[k + 1], A[k + 2], A[k + 3]
    if score == '' then
      redis.call('ZREM', P .. index, member)
    else
      redis.call('ZADD', P .. index, score == '#' and seq or score, member)
      redis.call('HSET', key, 'x' .. slot, index, 'y' .. slot, member)
    end
  end
end

-- Removes a record from the listing indexes its hash names (see move_indexes).
local function unindex(key)
  local slot = 1
  while true do
    local entry = redis.call('HMGET', key, 'x' .. slot, 'y' .. slot)
    if not entry[1] then return end
    redis.call('ZREM', P .. entry[1], entry[2])
    slot = slot + 1
  end
end

-- A change's sequence number, index writes, log entry and notification. A[i .. i + 4],
-- as the client computed them: the count the record leaves and the count it joins
-- ('' for none), the index move ('active', 'finished' or '' for none), the finish time
-- (for 'finished'), and the record's text. The seq becomes the record's version: its
-- score in the recent zset.
local function commit(kind, doc_id, A, i, j)
  local seq = redis.call('INCR', K_SEQ)
  redis.call('ZADD', K_RECENT, seq, doc_id)
  move_indexes(K_DOC .. doc_id, seq, A, j)
  local move = A[i + 2]
  if move == 'active' then
    redis.call('SADD', K_ACTIVE, doc_id)
    redis.call('ZREM', K_FINISHED, doc_id)
  elseif move == 'finished' then
    redis.call('SREM', K_ACTIVE, doc_id)
    redis.call('ZADD', K_FINISHED, A[i + 3], doc_id)
  end
  if A[i] ~= '' then redis.call('HINCRBY', K_COUNTS, A[i], -1) end
  if A[i + 1] ~= '' then redis.call('HINCRBY', K_COUNTS, A[i + 1], 1) end
  local entry = {'t', kind, 'd', doc_id, 'r', A[i + 4]}
  if A[i] == '' and A[i + 1] == '' then
    -- The record stays in the count it was in: a report, marked for the readers of moves.
    entry[7], entry[8] = 'm', '0'
  end
  redis.call('XADD', K_LOG, 'MAXLEN', '~', LOG_SIZE, seq .. '-0', unpack(entry))
  redis.call('PUBLISH', CHANNEL, seq)
  return seq
end

-- Operations ------------------------------------------------------------------------
-- A[1] is the key prefix (see use_prefix), A[2] the doc_id. A record is a hash of two
-- fields: 'r', its text, and 'c', the count it is in (so that removing it needs no
-- reading of the text).

local function op_cas(A)
  -- Compare-and-set. A[3]: the version the client's change was computed from; A[4 .. 8]:
  -- see commit; A[9 .. 12]: see move_lease; A[13]: '' or a lease epoch that must have
  -- expired (else the reply is {'unexpired'} and nothing is written); A[14 .. 16]: see
  -- tally; A[17 ..]: see move_indexes. The reply:
  -- {'ok', seq}, {'missing'}, or {'conflict', version, text} with the current record,
  -- so that the client can retry at once.
  local doc_id = A[2]
  local key = K_DOC .. doc_id
  local version = redis.call('ZSCORE', K_RECENT, doc_id)
  if not version then return {'missing'} end
  local expired_epoch = A[13] or ''
  if expired_epoch ~= '' and not lease_expired(doc_id, expired_epoch) then return {'unexpired'} end
  if version ~= A[3] then return {'conflict', version, redis.call('HGET', key, 'r')} end
  if A[5] == '' then
    redis.call('HSET', key, 'r', A[8])
  else
    redis.call('HSET', key, 'r', A[8], 'c', A[5])
  end
  move_lease(doc_id, A, 9)
  tally(A, 14)
  return {'ok', commit('updated', doc_id, A, 4, 17)}
end

local function op_create(A)
  -- Insert if absent. A[3 .. 7]: see commit; A[8 .. 11]: see move_lease; A[12 .. 14]: see
  -- tally; A[15 ..]: see move_indexes. The reply:
  -- {'ok', seq} or {'duplicate'}.
  local doc_id = A[2]
  local key = K_DOC .. doc_id
  if redis.call('EXISTS', key) == 1 then return {'duplicate'} end
  redis.call('HSET', key, 'r', A[7], 'c', A[4])
  move_lease(doc_id, A, 8)
  tally(A, 12)
  return {'ok', commit('created', doc_id, A, 3, 15)}
end

local function op_read(A)
  -- The record's version and text, or {} when there is none.
  local doc_id = A[2]
  local version = redis.call('ZSCORE', K_RECENT, doc_id)
  if not version then return {} end
  return {version, redis.call('HGET', K_DOC .. doc_id, 'r')}
end

local function texts(ids)
  -- The texts of the records of ``ids`` that exist, in order.
  local out = {}
  for _, doc_id in ipairs(ids) do
    local text = redis.call('HGET', K_DOC .. doc_id, 'r')
    if text then out[#out + 1] = text end
  end
  return out
end

local function op_recent(A)
  -- A[2]: the last index wanted. Records, most recently changed first.
  return texts(redis.call('ZREVRANGE', K_RECENT, 0, A[2]))
end

local function op_active(A)
  -- Records in the active set, most recently changed first: the set is small, so it is
  -- kept unordered (written only when a record enters or leaves it) and sorted here.
  local ids = redis.call('SMEMBERS', K_ACTIVE)
  local seqs = {}
  for _, doc_id in ipairs(ids) do seqs[doc_id] = tonumber(redis.call('ZSCORE', K_RECENT, doc_id)) or 0 end
  table.sort(ids, function(a, b) return seqs[a] > seqs[b] end)
  return texts(ids)
end

-- The doc_id at the end of a lex index member (after its last zero byte).
local function member_doc_id(member)
  local at, from = nil, 1
  while true do
    local found = string.find(member, '\0', from, true)
    if not found then break end
    at, from = found, found + 1
  end
  return at and string.sub(member, at + 1) or member
end

local function op_range(A)
  -- A[2]: an index key (under the prefix); A[3]: 'score' or 'lex'; A[4]: '1' for highest
  -- first; A[5], A[6]: the first and the last bound, as ZRANGEBYSCORE or ZRANGEBYLEX take
  -- them in that direction; A[7]: how many. {member, score, text, ...} of the members
  -- whose record exists, in order (score '' for a lex index).
  local index, rev, out = P .. A[2], A[4] == '1', {}
  local entries
  if A[3] == 'score' then
    local command = rev and 'ZREVRANGEBYSCORE' or 'ZRANGEBYSCORE'
    entries = redis.call(command, index, A[5], A[6], 'WITHSCORES', 'LIMIT', 0, A[7])
  else
    local command = rev and 'ZREVRANGEBYLEX' or 'ZRANGEBYLEX'
    local members = redis.call(command, index, A[5], A[6], 'LIMIT', 0, A[7])
    entries = {}
    for _, member in ipairs(members) do
      entries[#entries + 1] = member
      entries[#entries + 1] = ''
    end
  end
  for i = 1, #entries, 2 do
    local member = entries[i]
    local doc_id = A[3] == 'score' and member or member_doc_id(member)
    local text = redis.call('HGET', K_DOC .. doc_id, 'r')
    if text then
      out[#out + 1] = member
      out[#out + 1] = entries[i + 1]
      out[#out + 1] = text
    end
  end
  return out
end

local function op_log(A)
  -- A[2]: the first entry ID, A[3]: how many. Entries as XRANGE gives them:
  -- {id, {'t', kind, 'd', doc_id, 'r', text}} ('r' and the text absent for a removal).
  return redis.call('XRANGE', K_LOG, A[2], '+', 'COUNT', A[3])
end

-- Removes a finished record as a 'removed' change; returns its seq.
local function remove_record(doc_id)
  local key = K_DOC .. doc_id
  local count = redis.call('HGET', key, 'c')
  unindex(key)
  redis.call('DEL', key)
  redis.call('ZREM', K_RECENT, doc_id)
  redis.call('ZREM', K_FINISHED, doc_id)
  if count then redis.call('HINCRBY', K_COUNTS, count, -1) end
  local seq = redis.call('INCR', K_SEQ)
  redis.call('XADD', K_LOG, 'MAXLEN', '~', LOG_SIZE, seq .. '-0', 't', 'removed', 'd', doc_id)
  redis.call('PUBLISH', CHANNEL, seq)
  return seq
end

local function op_expire(A)
  -- A[2]: '(' .. before, A[3]: limit. Removes the records that finished before ``before``,
  -- oldest first; returns {seq, doc_id, ...}.
  local out = {}
  local ids = redis.call('ZRANGEBYSCORE', K_FINISHED, '-inf', A[2], 'LIMIT', 0, A[3])
  for _, doc_id in ipairs(ids) do
    out[#out + 1] = remove_record(doc_id)
    out[#out + 1] = doc_id
  end
  return out
end

local function op_remove(A)
  -- A[2]: doc_id. Removes the record if it is in the finished index; its seq, or 0.
  if redis.call('ZSCORE', K_FINISHED, A[2]) == false then return 0 end
  return remove_record(A[2])
end

local function op_renew(A)
  -- A[3]: the epoch, A[4]: seconds. 1 if the lease index entry had that epoch (its expiry
  -- is then now + seconds), else 0.
  local doc_id = A[2]
  if redis.call('HGET', K_LEASE_EPOCHS, doc_id) ~= A[3] then return 0 end
  redis.call('ZADD', K_LEASES, 'XX', expiry(A[4]), doc_id)
  return 1
end

local function op_expired(A)
  -- A[2]: limit. {doc_id, epoch, ...} of the expired leases, oldest first.
  local out = {}
  for _, doc_id in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', '(' .. now(), 'LIMIT', 0, A[2])) do
    out[#out + 1] = doc_id
    out[#out + 1] = redis.call('HGET', K_LEASE_EPOCHS, doc_id) or '0'
  end
  return out
end

local function op_leases(A)
  -- {doc_id, epoch, worker, expires, ...} of every lease, soonest to expire first.
  local out = {}
  local entries = redis.call('ZRANGE', K_LEASES, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local doc_id = entries[i]
    out[#out + 1] = doc_id
    out[#out + 1] = redis.call('HGET', K_LEASE_EPOCHS, doc_id) or '0'
    out[#out + 1] = redis.call('HGET', K_LEASE_WORKERS, doc_id) or ''
    out[#out + 1] = entries[i + 1]
  end
  return out
end

local function op_tallies(A)
  -- A[2 ..]: minutes. {c, f, p} of each (false where a minute has no counts), in order.
  local out = {}
  for i = 2, #A do out[#out + 1] = redis.call('HMGET', K_TALLY .. A[i], 'c', 'f', 'p') end
  return out
end

local function op_now(A)
  -- The server's clock as text (a Lua number reply would lose the fraction).
  return string.format('%.6f', now())
end

-- The worker registry: 'workers' (worker_id -> its info, the client's text), 'workers_seen'
-- (worker_id -> last heartbeat) and 'workers_expiry' (worker_id by expiry), on the server's clock.

local function forget(worker_id)
  redis.call('ZREM', K_WORKERS_EXPIRY, worker_id)
  redis.call('HDEL', K_WORKERS, worker_id)
  redis.call('HDEL', K_WORKERS_SEEN, worker_id)
end

local function op_heartbeat(A)
  -- A[2]: the worker id, A[3]: its info (text), A[4]: seconds. Drops expired entries.
  local t = now()
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', K_WORKERS_EXPIRY, '-inf', '(' .. t)) do forget(gone) end
  redis.call('ZADD', K_WORKERS_EXPIRY, expiry(A[4]), A[2])
  redis.call('HSET', K_WORKERS, A[2], A[3])
  redis.call('HSET', K_WORKERS_SEEN, A[2], string.format('%.6f', t))
  return 1
end

local function op_workers(A)
  -- {worker_id, info, last_seen, expires, ...} of the live entries, in no particular order.
  local out = {}
  local entries = redis.call('ZRANGEBYSCORE', K_WORKERS_EXPIRY, now(), '+inf', 'WITHSCORES')
  for i = 1, #entries, 2 do
    local worker_id = entries[i]
    out[#out + 1] = worker_id
    out[#out + 1] = redis.call('HGET', K_WORKERS, worker_id) or '{}'
    out[#out + 1] = redis.call('HGET', K_WORKERS_SEEN, worker_id) or '0'
    out[#out + 1] = entries[i + 1]
  end
  return out
end

local function op_forget(A)
  -- A[2]: the worker id.
  forget(A[2])
  return 1
end

local OPS = {
  cas = op_cas, create = op_create, read = op_read, recent = op_recent, active = op_active,
  log = op_log, expire = op_expire, remove = op_remove, renew = op_renew, expired = op_expired, leases = op_leases,
  now = op_now, heartbeat = op_heartbeat, workers = op_workers, forget = op_forget, range = op_range,
  tallies = op_tallies,
}
__ENTRY__
