// Node side of tickkit's cron differential test: `node cron-parser.js < requests.jsonl`.
// Each input line is {"pattern": "...", "tz": "Europe/Berlin", "from": <epoch ms>, "count": 12}.
// For each line one JSON line is printed: {"times": [<epoch ms>, ...]} or {"error": "..."}.
// Every time comes from BullMQ's own getNextMillis (which calls CronExpressionParser.parse
// with the repeat options, `tz` and `currentDate`), fed its previous result, as a job scheduler
// does: `times` stops early when getNextMillis gives up (cron-parser's "loop limit exceeded").
'use strict';
const readline = require('readline');
const { getNextMillis } = require('bullmq/dist/cjs/classes/job-scheduler');
const { version } = require('cron-parser/package.json');

function run(req) {
  const opts = { pattern: req.pattern, tz: req.tz };
  const times = [];
  let at = req.from;
  try {
    for (let i = 0; i < req.count; i++) {
      const next = getNextMillis(at, opts);
      if (next === undefined || next === null || Number.isNaN(next)) {
        return { times, stopped: true };
      }
      times.push(next);
      at = next;
    }
  } catch (e) {
    return { error: String((e && e.message) || e), times };
  }
  return { times };
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
rl.on('line', (line) => {
  if (line.trim()) out.push(JSON.stringify(run(JSON.parse(line))));
});
rl.on('close', () => {
  process.stdout.write(JSON.stringify({ cronParser: version }) + '\n' + out.join('\n') + '\n');
});
