// Sends track, identify, page and a retried track through the real @segment/analytics-node
// client to a Strom server. Usage: node send.mjs URL WRITE_KEY RUN_ID
import { Analytics } from '@segment/analytics-node'

const [url, writeKey, run] = process.argv.slice(2)
if (!url || !writeKey || !run) {
  console.error('usage: node send.mjs URL WRITE_KEY RUN_ID')
  process.exit(2)
}

const failures = []
const analytics = new Analytics({ writeKey, host: url, flushAt: 3, flushInterval: 200, maxRetries: 2 })
analytics.on('error', (error) => failures.push(String(error?.reason ?? error)))

const done = (name) => (error) => { if (error) failures.push(`${name}: ${error}`) }
// A client clock 2 minutes ahead: the event is stamped in the future.
const skewed = new Date(Date.now() + 120_000)
analytics.track({
  userId: `u-${run}`, event: 'AddToCart', messageId: `${run}-track`, timestamp: skewed,
  properties: { sku: 'SKU-1', price: 19.99, quantity: 2 },
}, done('track'))
analytics.identify({ userId: `u-${run}`, messageId: `${run}-identify`, traits: { plan: 'pro', email: 'a@example.com' } }, done('identify'))
analytics.page({ anonymousId: `a-${run}`, name: 'Home', messageId: `${run}-page`, properties: { path: '/' } }, done('page'))
await analytics.flush({ timeout: 10_000 })
// The SDK retrying the same message (same messageId) after a timeout it thought failed.
analytics.track({
  userId: `u-${run}`, event: 'AddToCart', messageId: `${run}-track`, timestamp: skewed,
  properties: { sku: 'SKU-1', price: 19.99, quantity: 2 },
}, done('retried track'))
await analytics.closeAndFlush({ timeout: 10_000 })
if (failures.length > 0) {
  console.error(JSON.stringify(failures))
  process.exit(1)
}
console.log('sent')
