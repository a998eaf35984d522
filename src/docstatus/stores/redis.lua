-- The docstatus Redis store, server side: every change is checked and applied here,
-- atomically, in one call (see redis.py for the data layout and the calling side).
--
-- This is a Redis Functions library (Redis 7+): loaded once, its tables and
-- functions are then built once, not on every call as a script's are. For older
-- servers redis.py turns the same code into a script for EVALSHA; the last line
-- is where the two differ. Every operation takes the key prefix as its first
-- argument.
--
-- The rules mirror docstatus.records (apply_update, apply_complete, apply_fail,
-- apply_requeue). The tables they need are not written here: redis.py renders
-- them from docstatus.models in place of the line below, so the lifecycle has a
-- single source. They are LEGAL (current -> set of targets), FINAL (set of
-- statuses), QUOTED (status -> its JSON text), STAGE (status -> default stage as
-- JSON), START and WIDTH (status -> its share of the progress bar, in thousandths), SMOOTHING,
-- MIN_INTERVAL (RateEstimator) and LOG_SIZE.
__RULES__

-- A record is stored once, as a hash of field -> that field's JSON text: a change
-- reads it with one HGETALL and writes back only the fields it changed; readers
-- (redis.py) join the pairs into one JSON object. Only what a rule needs is decoded.
-- Python-made numbers and strings are thus stored exactly as Python made them;
-- numbers this code computes are written with enough digits to read back as the
-- same double. Nothing here builds a whole record's JSON text: the log entry of a
-- change carries the same pairs.

-- Bound on the first call: Redis 7.0 runs a library's top level without the standard
-- libraries (they are there when its functions are called).
local find, sub, byte, format, match, concat, sort, HUGE, MAX, MIN

local function bind_libraries()
  find, sub, byte, format, match = string.find, string.sub, string.byte, string.format, string.match
  concat, sort, HUGE, MAX, MIN = table.concat, table.sort, math.huge, math.max, math.min
end

-- The key prefix and the keys of the store being called (every call names its prefix).
local P, K_DOC, K_SEQ, K_RECENT, K_ACTIVE, K_FINISHED, K_COUNTS, K_LOG, CHANNEL

local function use_prefix(prefix)
  if not find then bind_libraries() end
  if prefix == P then return end
  P, K_DOC = prefix, prefix .. 'doc:'
  K_SEQ, K_RECENT, K_ACTIVE = P .. 'seq', P .. 'recent', P .. 'active'
  K_FINISHED, K_COUNTS, K_LOG, CHANNEL = P .. 'finished', P .. 'counts', P .. 'log', P .. 'changes'
end

-- Outcomes a rule signals with error(); caught in the dispatcher.
local REFUSED, FALLBACK = 'docstatus:refused', 'docstatus:fallback'

-- JSON text ------------------------------------------------------------------

local function string_end(s, i)
  -- s[i] opens a JSON string; the index of the quote that closes it.
  local j = i + 1
  while true do
    local k = find(s, '["\\]', j)
    if byte(s, k) == 92 then j = k + 2 else return k end
  end
end

local function value_end(s, i)
  -- The index of the last character of the JSON value that starts at s[i].
  local c = byte(s, i)
  if c == 34 then return string_end(s, i) end
  if c ~= 123 and c ~= 91 then return (find(s, '[,}%]%s]', i) or (#s + 1)) - 1 end
  local depth, j = 0, i
  while true do
    local k = find(s, '["{}%[%]]', j)
    local ch = byte(s, k)
    if ch == 34 then
      j = string_end(s, k) + 1
    else
      if ch == 123 or ch == 91 then depth = depth + 1 else depth = depth - 1 end
      if depth == 0 then return k end
      j = k + 1
    end
  end
end

-- A JSON object as ordered members: {keys = {raw key}, values = {raw value}, at = {raw key -> n}}.
local function split_object(s)
  local obj = {keys = {}, values = {}, at = {}}
  local i = find(s, '%S', 2)
  if byte(s, i) == 125 then return obj end
  while true do
    local key_end = string_end(s, i)
    local key = sub(s, i, key_end)
    i = find(s, '[^%s:]', key_end + 1)
    local v_end = value_end(s, i)
    local n = obj.at[key] or (#obj.keys + 1)
    obj.keys[n], obj.values[n], obj.at[key] = key, sub(s, i, v_end), n
    i = find(s, '%S', v_end + 1)
    if byte(s, i) == 125 then return obj end
    i = find(s, '%S', i + 1)
  end
end

local function put_member(obj, key, value)
  -- Like dict assignment: an existing key keeps its place, a new one goes last.
  local n = obj.at[key]
  if not n then
    n = #obj.keys + 1
    obj.keys[n], obj.at[key] = key, n
  end
  obj.values[n] = value
end

local function join_object(obj)
  local parts = {}
  for n = 1, #obj.keys do parts[n] = obj.keys[n] .. ': ' .. obj.values[n] end
  return '{' .. concat(parts, ', ') .. '}'
end

local function fnum(x)
  -- A float as JSON that Python reads back as the same float (never as an int):
  -- 17 significant digits always name the same double. %.17g writes a whole number
  -- below 1e17 without a point or an exponent, so Python would read an int.
  local s = format('%.17g', x)
  if x % 1 == 0 and x < 1e17 and x > -1e17 then s = s .. '.0' end
  return s
end

local function scalar(raw)
  -- How Python sees a JSON value: 'none', 'int' or 'float' with its value, or
  -- 'other' for what this script does not reproduce (the change then runs in Python).
  if raw == nil or raw == 'null' then return 'none' end
  local value = tonumber(raw) -- nil for strings, objects, arrays, true and false
  if value == nil or value ~= value or value == HUGE or value == -HUGE then return 'other' end
  if find(raw, '[%.eE]') then return 'float', value end
  if #raw > 15 then return 'other' end -- beyond the integers a double holds exactly
  return 'int', value
end

-- Records ----------------------------------------------------------------------

local function unquote(raw) return sub(raw, 2, -2) end

-- Tables are made with room for what they will hold (a constructor that names the keys,
-- even as nil, sizes the table): growing one field at a time reallocates it every
-- doubling, which costs more than the rules' arithmetic.
local function new_raw()
  return {
    doc_id = nil, filename = nil, status = nil, progress = nil, stage = nil, page = nil, total_pages = nil,
    started_at = nil, updated_at = nil, completed_at = nil, elapsed_time = nil, estimated_remaining = nil,
    metadata = nil, error = nil, _track = nil,
  }
end

local function read_record(key)
  -- The stored record: HGETALL's reply (name, JSON text, ...) and a table name -> JSON text.
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local raw = new_raw()
  for i = 1, #flat, 2 do raw[flat[i]] = flat[i + 1] end
  return flat, raw
end

-- _track: four numbers, then two ints (written by Python without a point or an exponent).
local TRACK = '^%[%s*([^,%s]+)%s*,%s*([^,%s]+)%s*,%s*([^,%s]+)%s*,%s*([^,%s]+)%s*,%s*(%d+)%s*,%s*(%d+)%s*%]$'

local function finished_at(raw, track)
  -- records.finished_at: when the document finished, as epoch seconds.
  local started = track and track[1] or match(raw._track, '^%[%s*([^,%s]+)')
  return tonumber(started) + tonumber(raw.elapsed_time)
end

-- The change's sequence number, the indexes, the log and the notification. ``flat`` is
-- the record after the change as name, JSON text pairs; old_status is nil for a new record.
local function commit(kind, doc_id, old_status, new_status, finished, flat)
  local seq = redis.call('INCR', K_SEQ)
  redis.call('ZADD', K_RECENT, seq, doc_id)
  local was_active = old_status ~= nil and not FINAL[old_status]
  if FINAL[new_status] then
    if was_active then redis.call('SREM', K_ACTIVE, doc_id) end
    redis.call('ZADD', K_FINISHED, format('%.17g', finished), doc_id)
  elseif not was_active then
    redis.call('SADD', K_ACTIVE, doc_id)
    if old_status then redis.call('ZREM', K_FINISHED, doc_id) end
  end
  if old_status ~= new_status then
    if old_status then redis.call('HINCRBY', K_COUNTS, old_status, -1) end
    redis.call('HINCRBY', K_COUNTS, new_status, 1)
  end
  redis.call('XADD', K_LOG, 'MAXLEN', '~', LOG_SIZE, seq .. '-0', 't', kind, 'd', doc_id, unpack(flat))
  redis.call('PUBLISH', CHANNEL, seq)
  return seq
end

local function write_record(key, doc_id, kind, old_status, flat)
  -- Stores a whole record given as name, JSON text pairs (create, and the Python fallback).
  redis.call('HSET', key, unpack(flat))
  local raw = new_raw()
  for i = 1, #flat, 2 do raw[flat[i]] = flat[i + 1] end
  local status = unquote(raw.status)
  return commit(kind, doc_id, old_status, status, FINAL[status] and finished_at(raw), flat)
end

-- The rules ------------------------------------------------------------------------
-- A change works on ``doc``: raw (field -> JSON text, updated in place), status,
-- progress, track (the six JSON texts of _track) with the numbers of its first five
-- (started, at, progress_at, ema, samples), and meta (the metadata object, split
-- when a rule needs it).

local NOW_RAW, NOW_ISO, NOW

local function meta(doc)
  if not doc.meta then doc.meta = split_object(doc.raw.metadata) end
  return doc.meta
end

local function numbers(done_raw, total_raw)
  -- _check_counts: both ints and done > total is refused. Returns both values.
  local kd, done = scalar(done_raw)
  local kt, total = scalar(total_raw)
  if kd == 'other' or kt == 'other' then error(FALLBACK, 0) end
  if kd == 'int' and kt == 'int' and done > total then error(REFUSED, 0) end
  return done, total
end

local function merge_fields(doc, fields)
  -- records._merge_fields; ``fields`` maps a field name to its JSON text.
  if next(fields) == nil then return end
  local update = fields.metadata
  if update == 'null' then update = nil end
  if update then
    if byte(update) ~= 123 then error(FALLBACK, 0) end -- not an object
    update = split_object(update)
  end
  if (update and #update.keys > 0) or fields.chunk or fields.total_chunks then
    local m = meta(doc)
    if update then
      for n, key in ipairs(update.keys) do put_member(m, key, update.values[n]) end
    end
    if fields.chunk then put_member(m, '"chunk"', fields.chunk) end
    if fields.total_chunks then put_member(m, '"total_chunks"', fields.total_chunks) end
    doc.meta_changed = true
    numbers(m.values[m.at['"chunk"']], m.values[m.at['"total_chunks"']])
  end
  local r = doc.raw
  r.stage = fields.stage or r.stage
  r.page = fields.page or r.page
  r.total_pages = fields.total_pages or r.total_pages
  r.error = fields.error or r.error
  -- Kept for progress_for, which would otherwise parse the same two texts again.
  doc.pages = {numbers(r.page, r.total_pages)}
end

local function advance(doc, progress, progress_raw)
  -- records._advance and RateEstimator.advance
  local t = doc.track
  if progress > doc.progress then
    doc.progress, doc.raw.progress = progress, progress_raw
    local dt, gained = NOW - doc.at, progress - doc.progress_at
    if not (gained <= 0 or dt < MIN_INTERVAL) then
      local alpha = SMOOTHING
      doc.at, doc.progress_at = NOW, progress
      doc.ema, doc.samples = alpha * (gained / dt) + (1 - alpha) * doc.ema, doc.samples + 1
      t[2], t[3], t[4], t[5] = NOW_RAW, progress_raw, fnum(doc.ema), format('%d', doc.samples)
      doc.track_changed = true
    end
  end
  doc.raw.updated_at = NOW_ISO
  doc.raw.elapsed_time = fnum(MAX(0.0, NOW - doc.started))
end

local function remaining(doc)
  -- RateEstimator.remaining, as JSON.
  local samples = doc.samples
  if samples < 1 then return 'null' end
  local rate = doc.ema / (1 - (1 - SMOOTHING) ^ samples)
  if rate <= 0 or rate ~= rate or rate == HUGE then return 'null' end
  return fnum(MAX(0.0, (1.0 - doc.progress) / rate - MAX(0.0, NOW - doc.at)))
end

local function set_eta_given(doc, given)
  if doc.track[6] ~= given then doc.track[6], doc.track_changed = given, true end
end

local function estimate(doc, fields)
  if fields.estimated_remaining then
    doc.raw.estimated_remaining = fields.estimated_remaining
    set_eta_given(doc, '1')
  else
    doc.raw.estimated_remaining = remaining(doc)
    set_eta_given(doc, '0')
  end
end

local function finish(doc, status)
  doc.status, doc.raw.status = status, QUOTED[status]
  doc.raw.completed_at = NOW_ISO
  doc.raw.estimated_remaining = 'null'
  set_eta_given(doc, '0')
end

local function progress_for(doc, target)
  -- models.progress_for, with the units records._units picks.
  local start, width = START[target], WIDTH[target]
  if width == 0 then return start / 1000 end
  local done, total
  if target == 'embedding_visual' and doc.pages then
    done, total = doc.pages[1], doc.pages[2]
  else
    local done_raw, total_raw
    if target == 'embedding_visual' then
      done_raw, total_raw = doc.raw.page, doc.raw.total_pages
    else
      local m = (doc.meta or find(doc.raw.metadata, 'chunks?"')) and meta(doc)
      if m then done_raw, total_raw = m.values[m.at['"chunk"']], m.values[m.at['"total_chunks"']] end
    end
    local kd, kt
    kd, done = scalar(done_raw)
    kt, total = scalar(total_raw)
    if kd == 'other' or kt == 'other' then error(FALLBACK, 0) end
  end
  if total == nil or total == 0 or total <= 0 then return start / 1000 end
  if done == nil or done == 0 then done = 0 end
  -- Thousandths and one division, exactly as models.progress_for computes it.
  return (start * total + width * MIN(MAX(done, 0), total)) / (1000 * total)
end

local function refuse_if_final(doc)
  if FINAL[doc.status] then error(REFUSED, 0) end
end

local function apply_update(doc, target, progress_raw, fields)
  local current = doc.status
  local targets = LEGAL[current]
  if not (targets and targets[target]) then error(REFUSED, 0) end
  merge_fields(doc, fields)
  if not fields.stage and target ~= current then doc.raw.stage = STAGE[target] end
  if target == 'failed' then
    finish(doc, target)
    return advance(doc, doc.progress, doc.raw.progress)
  end
  if target == 'completed' then
    finish(doc, target)
    return advance(doc, 1.0, '1.0')
  end
  local progress = tonumber(progress_raw)
  if progress == nil then
    progress = progress_for(doc, target)
    progress_raw = fnum(progress)
  end
  if target ~= current then doc.status, doc.raw.status = target, QUOTED[target] end
  advance(doc, progress, progress_raw)
  estimate(doc, fields)
end

local function apply_complete(doc, extra)
  refuse_if_final(doc)
  if #extra.keys > 0 then
    local m = meta(doc)
    for n, key in ipairs(extra.keys) do put_member(m, key, extra.values[n]) end
    doc.meta_changed = true
  end
  doc.raw.stage = STAGE.completed
  finish(doc, 'completed')
  advance(doc, 1.0, '1.0')
end

local function apply_fail(doc, fields)
  refuse_if_final(doc)
  if not fields.error then error(FALLBACK, 0) end
  doc.raw.error = fields.error
  doc.raw.stage = STAGE.failed
  finish(doc, 'failed')
  advance(doc, doc.progress, doc.raw.progress)
end

local function apply_requeue(doc)
  if doc.status ~= 'failed' then error(REFUSED, 0) end
  local m = meta(doc)
  local kind, attempt = scalar(m.values[m.at['"attempt"']])
  if kind == 'none' and not m.at['"attempt"'] then
    attempt = 1
  elseif kind ~= 'int' then
    error(FALLBACK, 0)
  end
  put_member(m, '"attempt"', format('%d', attempt + 1))
  doc.meta_changed = true
  local r = doc.raw
  r.status, r.progress, r.stage = QUOTED.queued, '0.0', STAGE.queued
  r.page, r.total_pages, r.completed_at, r.estimated_remaining, r.error = 'null', 'null', 'null', 'null', 'null'
  r.started_at, r.updated_at, r.elapsed_time = NOW_ISO, NOW_ISO, '0.0'
  doc.status = 'queued'
  doc.track, doc.track_changed = {NOW_RAW, NOW_RAW, '0.0', '0.0', '0', '0'}, true
end

local function fields_from_args(A, kind)
  -- A[8...]: name, JSON text pairs; for 'complete', metadata keys (as JSON) and values.
  if kind == 'complete' then
    local extra = {keys = {}, values = {}, at = {}}
    for i = 8, #A, 2 do put_member(extra, A[i], A[i + 1]) end
    return extra
  end
  local fields = {
    stage = nil, page = nil, total_pages = nil, estimated_remaining = nil, metadata = nil, chunk = nil,
    total_chunks = nil, error = nil,
  }
  for i = 8, #A, 2 do fields[A[i]] = A[i + 1] end
  return fields
end

local function read_track(doc)
  -- The track's texts and numbers; a record whose track this code does not read runs in Python.
  local t1, t2, t3, t4, t5, t6 = match(doc.raw._track, TRACK)
  if not t1 then error(FALLBACK, 0) end
  doc.track = {t1, t2, t3, t4, t5, t6}
  doc.started, doc.at, doc.progress_at = tonumber(t1), tonumber(t2), tonumber(t3)
  doc.ema, doc.samples = tonumber(t4), tonumber(t5)
end

local function apply(A, doc, kind, target, progress_raw)
  local r = doc.raw
  -- Every field the rules read or write must be there: only the Python fallback can
  -- store a record without one, and then it changes that record too.
  if not (r.status and r.progress and r.stage and r.page and r.total_pages and r.started_at and r.updated_at
      and r.completed_at and r.elapsed_time and r.estimated_remaining and r.metadata and r.error and r._track) then
    error(FALLBACK, 0)
  end
  local fields = fields_from_args(A, kind)
  doc.progress = tonumber(r.progress)
  read_track(doc)
  if kind == 'update' then return apply_update(doc, target, progress_raw, fields) end
  if kind == 'complete' then return apply_complete(doc, fields) end
  if kind == 'fail' then return apply_fail(doc, fields) end
  if kind == 'requeue' then return apply_requeue(doc) end
  error(FALLBACK, 0)
end

-- Operations ------------------------------------------------------------------------
-- A[1] is the key prefix (see use_prefix).

local function op_modify(A)
  -- A: doc_id, kind, now, now as ISO JSON, target, progress ('' for none), then the fields
  local doc_id = A[2]
  local key = K_DOC .. doc_id
  local flat, raw = read_record(key)
  if not flat then return {'missing'} end
  NOW_RAW, NOW_ISO, NOW = A[4], A[5], tonumber(A[4])
  local old_status = unquote(raw.status)
  local doc = {
    raw = raw, status = old_status, progress = nil, track = nil, started = nil, at = nil, progress_at = nil,
    ema = nil, samples = nil, pages = nil, meta = nil, meta_changed = nil, track_changed = nil,
  }
  local ok, err = pcall(apply, A, doc, A[3], A[6], A[7])
  if not ok then
    if err == REFUSED then return {'refused', flat} end
    if err == FALLBACK then return {'fallback'} end
    error(err, 0)
  end
  if doc.meta_changed then raw.metadata = join_object(doc.meta) end
  if doc.track_changed then raw._track = '[' .. concat(doc.track, ', ') .. ']' end
  -- Only the fields that changed are written; flat becomes the new record for the log.
  local changed, n = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, 0
  for i = 2, #flat, 2 do
    local value = raw[flat[i - 1]]
    if value ~= flat[i] then
      changed[n + 1], changed[n + 2], n = flat[i - 1], value, n + 2
      flat[i] = value
    end
  end
  if n > 0 then redis.call('HSET', key, unpack(changed, 1, n)) end
  local finished = FINAL[doc.status] and finished_at(raw, doc.track)
  return {'ok', commit('updated', doc_id, old_status, doc.status, finished, flat), flat}
end

local function op_create(A)
  -- A: doc_id, then the record as name, JSON text pairs
  local doc_id = A[2]
  local key = K_DOC .. doc_id
  if redis.call('EXISTS', key) == 1 then return {'duplicate'} end
  return {'ok', write_record(key, doc_id, 'created', nil, {unpack(A, 3)})}
end

local function op_read(A)
  -- A: doc_id. The record and its version (the seq of its last change), for a
  -- read-modify-write in Python that op_put then applies if nothing changed between.
  local doc_id = A[2]
  local flat = redis.call('HGETALL', K_DOC .. doc_id)
  if #flat == 0 then return {} end
  return {flat, redis.call('ZSCORE', K_RECENT, doc_id)}
end

local function op_put(A)
  -- A: doc_id, expected version, then the record as name, JSON text pairs
  local doc_id = A[2]
  local version = redis.call('ZSCORE', K_RECENT, doc_id)
  if not version or version ~= A[3] then return {'conflict'} end
  local key = K_DOC .. doc_id
  local old_status = unquote(redis.call('HGET', key, 'status'))
  redis.call('DEL', key)
  return {'ok', write_record(key, doc_id, 'updated', old_status, {unpack(A, 4)})}
end

local function records(ids)
  -- The records of ``ids`` that exist, in order, each as HGETALL gives it.
  local out = {}
  for _, doc_id in ipairs(ids) do
    local flat = redis.call('HGETALL', K_DOC .. doc_id)
    if #flat > 0 then out[#out + 1] = flat end
  end
  return out
end

local function op_recent(A)
  -- A: the last index wanted. Records, most recently changed first.
  return records(redis.call('ZREVRANGE', K_RECENT, 0, A[2]))
end

local function op_active(A)
  -- Unfinished records, most recently changed first: the active set is small, so it is
  -- kept unordered (written only when a document starts or ends) and sorted here.
  local ids = redis.call('SMEMBERS', K_ACTIVE)
  local seqs = {}
  for _, doc_id in ipairs(ids) do seqs[doc_id] = tonumber(redis.call('ZSCORE', K_RECENT, doc_id)) or 0 end
  sort(ids, function(a, b) return seqs[a] > seqs[b] end)
  return records(ids)
end

local function op_log(A)
  -- A: the first entry ID, how many. Entries as XRANGE gives them: {id, {'t', kind, 'd', doc_id,
  -- then the record as name, JSON text pairs (none for a removal)}}.
  return redis.call('XRANGE', K_LOG, A[2], '+', 'COUNT', A[3])
end

local function op_expire(A)
  -- A: '(' .. before, limit. Removes finished records; returns {seq, doc_id, ...}.
  local out = {}
  local ids = redis.call('ZRANGEBYSCORE', K_FINISHED, '-inf', A[2], 'LIMIT', 0, A[3])
  for _, doc_id in ipairs(ids) do
    local key = K_DOC .. doc_id
    local status = redis.call('HGET', key, 'status')
    redis.call('DEL', key)
    redis.call('ZREM', K_RECENT, doc_id)
    redis.call('ZREM', K_FINISHED, doc_id)
    if status then redis.call('HINCRBY', K_COUNTS, unquote(status), -1) end
    local seq = redis.call('INCR', K_SEQ)
    redis.call('XADD', K_LOG, 'MAXLEN', '~', LOG_SIZE, seq .. '-0', 't', 'removed', 'd', doc_id)
    redis.call('PUBLISH', CHANNEL, seq)
    out[#out + 1] = seq
    out[#out + 1] = doc_id
  end
  return out
end

local OPS = {
  modify = op_modify, create = op_create, read = op_read, put = op_put, recent = op_recent,
  active = op_active, log = op_log, expire = op_expire,
}
__ENTRY__
