#!/usr/bin/env node
// kafkajs driver for switchyard's real-cluster tests. The command line and
// the stdout protocol are specified in ../README.md; stdout carries only its
// JSON lines, kafkajs logs go to stderr.
//
// What kafkajs 2.2.4 cannot do, and so is a fatal error here:
//   --assignor cooperative  (only eager assignors exist in kafkajs)
//   --instance-id           (no static membership / group.instance.id)
//   --assign, --from-timestamp (no assign(): a kafkajs consumer always joins a group)
//   --protocol consumer     (no KIP-848 group protocol)
// kafkajs has no linger.ms, delivery.timeout.ms or record-level callbacks,
// so this program batches records itself for 5 ms, gives each send() 120 s
// before reporting its records as failed, and maps a partition's base offset
// back to its records.
'use strict'

const readline = require('readline')

const out = obj => process.stdout.write(JSON.stringify(obj) + '\n')
function fatal(err) {
  out({ ev: 'fatal', err: String(err) })
  process.exit(1)
}
const errText = e => (e instanceof Error ? `${e.name}: ${e.message}` : String(e))

let kafkajs
try {
  kafkajs = require('kafkajs')
} catch (e) {
  fatal(`cannot load kafkajs (run tests/clients/node/build.sh, set NODE_PATH): ${e.message}`)
}
const { Kafka, logLevel, CompressionTypes, CompressionCodecs, Partitioners, AssignerProtocol } =
  kafkajs

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
function bounded(promise, ms, what) {
  let timer
  const expiry = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
  })
  return Promise.race([promise, expiry]).finally(() => clearTimeout(timer))
}

// ---- command line -------------------------------------------------------

const REQUIRED = undefined
const OPTIONS = {
  produce: {
    bootstrap: REQUIRED, topic: REQUIRED, prefix: REQUIRED, keys: '8', rate: '200',
    idempotent: 'false', acks: 'all', compression: 'none', max: null,
  },
  consume: {
    bootstrap: REQUIRED, topic: REQUIRED, group: REQUIRED, assignor: 'eager', 'instance-id': null,
    commit: 'sync', assign: null, 'from-timestamp': null, protocol: 'classic',
  },
}

function parseArgs(argv) {
  const [command, ...rest] = argv
  const spec = OPTIONS[command]
  if (!spec) fatal(`usage: client.js produce|consume --option value ... (got ${command})`)
  const opts = { ...spec }
  for (let i = 0; i < rest.length; i += 2) {
    const name = rest[i].replace(/^--/, '')
    if (!rest[i].startsWith('--') || !(name in spec)) fatal(`unknown option ${rest[i]}`)
    if (i + 1 >= rest.length) fatal(`missing value for ${rest[i]}`)
    opts[name] = rest[i + 1]
  }
  for (const [name, value] of Object.entries(opts)) {
    if (value === REQUIRED) fatal(`--${name} is required`)
  }
  return { command, opts }
}

function choice(opts, name, values) {
  if (!values.includes(opts[name])) fatal(`--${name} must be one of ${values.join('|')}`)
  return opts[name]
}

function integer(opts, name) {
  const n = Number(opts[name])
  if (!Number.isInteger(n) || n < 0) fatal(`--${name} must be a non-negative integer`)
  return n
}

// Resolves on a `stop` line or when stdin closes.
const stopRequested = new Promise(resolve => {
  const rl = readline.createInterface({ input: process.stdin })
  rl.on('line', line => line.trim() === 'stop' && resolve())
  rl.on('close', resolve)
})
let stopped = false
stopRequested.then(() => (stopped = true))

function kafka(bootstrap, clientId) {
  return new Kafka({
    clientId,
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, label, log }) => {
      const { message, timestamp, logger, ...extra } = log
      process.stderr.write(`${label} [${namespace}] ${message} ${JSON.stringify(extra)}\n`)
    },
  })
}

// ---- compression codecs -------------------------------------------------

const CODECS = {
  none: [CompressionTypes.None],
  gzip: [CompressionTypes.GZIP], // built into kafkajs
  snappy: [CompressionTypes.Snappy, () => require('kafkajs-snappy')],
  lz4: [CompressionTypes.LZ4, () => new (require('@2l/kafkajs-lz4'))().codec],
  zstd: [
    CompressionTypes.ZSTD,
    () => {
      const zstd = require('@mongodb-js/zstd')
      return () => ({
        compress: async encoder => zstd.compress(encoder.buffer, 3),
        decompress: async buffer => zstd.decompress(buffer),
      })
    },
  ],
}

// Registers every codec that loads; returns the error of those that do not.
function registerCodecs() {
  const broken = {}
  for (const [name, [type, load]] of Object.entries(CODECS)) {
    if (!load) continue
    try {
      CompressionCodecs[type] = load()
    } catch (e) {
      broken[name] = e.message
    }
  }
  return broken
}

// ---- produce ------------------------------------------------------------

async function produce(opts) {
  const keys = integer(opts, 'keys')
  const rate = integer(opts, 'rate')
  const max = opts.max === null ? Infinity : integer(opts, 'max')
  const idempotent = choice(opts, 'idempotent', ['true', 'false']) === 'true'
  const acks = { all: -1, 1: 1, 0: 0 }[choice(opts, 'acks', ['all', '1', '0'])]
  const compressionName = choice(opts, 'compression', Object.keys(CODECS))
  if (keys < 1) fatal('--keys must be at least 1')
  if (idempotent && acks !== -1) fatal('kafkajs: an idempotent producer needs --acks all')
  const broken = registerCodecs()
  if (broken[compressionName]) {
    fatal(`compression codec ${compressionName} is unavailable: ${broken[compressionName]}`)
  }
  const compression = CODECS[compressionName][0]

  // The partitioner notes the partition it picked on the message, so that
  // acknowledgements (and acks=0 sends) can be reported per record.
  const createPartitioner = () => {
    const pick = Partitioners.DefaultPartitioner()
    return args => (args.message.partitionPicked = pick(args))
  }
  const producer = kafka(opts.bootstrap, `switchyard-node-${opts.prefix}`).producer({
    idempotent,
    maxInFlightRequests: 5,
    createPartitioner,
  })
  await bounded(producer.connect(), 60000, 'producer connect').catch(e => fatal(errText(e)))

  let acked = 0
  let failed = 0
  let unacked = 0
  let onSettle = null // wakes the send loop when unacked drops
  const batches = new Set() // sent, not yet acknowledged or failed
  let pending = [] // waiting for linger
  let lingerTimer = null

  function settle(batch, results, err) {
    if (!batches.delete(batch)) return // already reported (timed out)
    const baseOffsets = new Map((results || []).map(r => [r.partition, Number(r.baseOffset)]))
    const seen = new Map()
    for (const m of batch) {
      if (err) {
        out({ ev: 'fail', k: m.key, s: m.seq, err: errText(err) })
        failed++
        continue
      }
      const n = seen.get(m.partitionPicked) || 0
      seen.set(m.partitionPicked, n + 1)
      const base = baseOffsets.get(m.partitionPicked)
      out({ ev: 'ack', k: m.key, s: m.seq, p: m.partitionPicked, o: base === undefined || acks === 0 ? -1 : base + n })
      acked++
    }
    unacked -= batch.length
    if (onSettle) onSettle()
  }

  function sendPending() {
    clearTimeout(lingerTimer)
    lingerTimer = null
    const batch = pending
    pending = []
    if (batch.length === 0) return
    batches.add(batch)
    const messages = batch.map(m => ({ key: m.key, value: m.value }))
    bounded(producer.send({ topic: opts.topic, acks, compression, messages }), 120000, 'delivery')
      .then(
        results => {
          messages.forEach((m, i) => (batch[i].partitionPicked = m.partitionPicked))
          settle(batch, results, null)
        },
        err => settle(batch, null, err)
      )
  }

  const start = Date.now()
  for (let i = 0; i < max && !stopped; i++) {
    if (rate > 0) {
      const wait = start + (i * 1000) / rate - Date.now()
      if (wait > 0) await Promise.race([sleep(wait), stopRequested])
    }
    while (unacked >= 1000 && !stopped) {
      await Promise.race([new Promise(resolve => (onSettle = resolve)), stopRequested])
    }
    if (stopped) break
    const key = `${opts.prefix}-${i % keys}`
    const seq = Math.floor(i / keys)
    pending.push({ key, seq, value: `${key}#${seq}#${'x'.repeat(64)}` })
    unacked++
    if (!lingerTimer) lingerTimer = setTimeout(sendPending, 5)
  }

  // Flush: everything sent ends acknowledged or failed within 60 s.
  sendPending()
  const deadline = Date.now() + 60000
  while (batches.size > 0 && Date.now() < deadline) {
    await Promise.race([new Promise(resolve => (onSettle = resolve)), sleep(deadline - Date.now())])
  }
  for (const batch of [...batches]) settle(batch, null, new Error('not acknowledged within the 60 s flush'))
  await bounded(producer.disconnect(), 5000, 'producer disconnect').catch(e =>
    process.stderr.write(`disconnect: ${errText(e)}\n`)
  )
  out({ ev: 'done', acked, failed })
  process.exit(0)
}

// ---- consume ------------------------------------------------------------

// kafkajs ships only a round-robin assigner; this is Java's RangeAssignor
// (protocol name "range", so it can share a group with other clients).
const RangeAssigner = ({ cluster }) => ({
  name: 'range',
  version: 0,
  protocol({ topics }) {
    return { name: this.name, metadata: AssignerProtocol.MemberMetadata.encode({ version: this.version, topics }) }
  },
  async assign({ members, topics }) {
    const plan = Object.fromEntries(members.map(m => [m.memberId, {}]))
    for (const topic of topics) {
      const partitions = cluster
        .findTopicPartitionMetadata(topic)
        .map(p => p.partitionId)
        .sort((a, b) => a - b)
      const ids = members
        .filter(m => AssignerProtocol.MemberMetadata.decode(m.memberMetadata).topics.includes(topic))
        .map(m => m.memberId)
        .sort()
      const per = Math.floor(partitions.length / ids.length)
      const extra = partitions.length % ids.length
      ids.forEach((id, i) => {
        const from = i * per + Math.min(i, extra)
        const count = per + (i < extra ? 1 : 0)
        if (count > 0) plan[id][topic] = partitions.slice(from, from + count)
      })
    }
    return Object.entries(plan).map(([memberId, assignment]) => ({
      memberId,
      memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: this.version, assignment }),
    }))
  },
})

async function consume(opts) {
  const assignor = choice(opts, 'assignor', ['eager', 'cooperative'])
  const commit = choice(opts, 'commit', ['auto', 'sync'])
  const protocol = choice(opts, 'protocol', ['classic', 'consumer'])
  if (protocol === 'consumer') fatal('kafkajs has no KIP-848 consumer group protocol (--protocol consumer)')
  if (assignor === 'cooperative') fatal('kafkajs has no cooperative rebalancing protocol: its assignors are eager only')
  if (opts['instance-id'] !== null) fatal('kafkajs has no static membership (group.instance.id, --instance-id)')
  if (opts.assign !== null) fatal('kafkajs has no assign(): its consumer always joins a group (--assign)')
  if (opts['from-timestamp'] !== null) fatal('--from-timestamp needs --assign, which kafkajs lacks')
  registerCodecs() // a codec that fails to load shows up as an error when its data arrives

  const consumer = kafka(opts.bootstrap, `switchyard-node-${opts.group}`).consumer({
    groupId: opts.group,
    sessionTimeout: 10000,
    heartbeatInterval: 1000,
    partitionAssigners: [RangeAssigner],
    maxWaitTimeInMs: 500,
  })
  const topicPartitions = assignment => [...((assignment || {})[opts.topic] || [])].sort((a, b) => a - b)
  let owned = null // partitions assigned and not yet revoked
  const { GROUP_JOIN, REBALANCING, CRASH } = consumer.events
  consumer.on(REBALANCING, () => {
    // Eager protocol: a rebalance revokes everything.
    if (owned) out({ ev: 'revoked', p: owned })
    owned = null
  })
  consumer.on(GROUP_JOIN, ({ payload }) => {
    // Rejoining without a rebalance notice (unknown member, restart after a
    // crash) means the previous assignment was lost.
    if (owned) out({ ev: 'lost', p: owned })
    owned = topicPartitions(payload.memberAssignment)
    out({ ev: 'assigned', p: owned })
  })
  consumer.on(CRASH, ({ payload }) => {
    if (!payload.restart) fatal(errText(payload.error))
    if (owned) out({ ev: 'lost', p: owned })
    owned = null
    out({ ev: 'error', err: errText(payload.error) })
  })

  let records = 0
  await bounded(
    (async () => {
      await consumer.connect()
      await consumer.subscribe({ topics: [opts.topic], fromBeginning: true })
      await consumer.run({
        autoCommit: commit === 'auto',
        autoCommitInterval: 1000,
        eachBatch: async ({ batch, resolveOffset, isRunning, isStale }) => {
          let last = null
          for (const m of batch.messages) {
            if (!isRunning() || isStale()) break
            const value = m.value ? m.value.toString() : ''
            const seq = /^[^#]*#(\d+)#/.exec(value)
            const key = m.key ? m.key.toString() : null
            out({ ev: 'rec', k: key, s: seq ? Number(seq[1]) : -1, p: batch.partition, o: Number(m.offset) })
            records++
            resolveOffset(m.offset)
            last = m.offset
          }
          if (commit === 'sync' && last !== null) {
            const offset = (BigInt(last) + 1n).toString()
            const request = consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset }])
            await bounded(request, 30000, 'commit').catch(e => out({ ev: 'commit', ok: false, err: errText(e) }))
          }
        },
      })
    })(),
    60000,
    'consumer start'
  ).catch(e => fatal(errText(e)))

  await stopRequested
  // disconnect() waits for the batch in progress (which commits in sync
  // mode) and leaves the group.
  await bounded(consumer.disconnect(), 30000, 'consumer disconnect').catch(e =>
    process.stderr.write(`disconnect: ${errText(e)}\n`)
  )
  out({ ev: 'done', records })
  process.exit(0)
}

process.on('unhandledRejection', e => fatal(errText(e)))
process.on('uncaughtException', e => fatal(errText(e)))
const { command, opts } = parseArgs(process.argv.slice(2))
;(command === 'produce' ? produce : consume)(opts).catch(e => fatal(errText(e)))
