// A piece of the agent group's idle-penalty rows (control-plane-boot.ts): the same fixed
// JavaScript work (a walk over 20,000 small objects, about 100 µs) run back to back, then
// each run after a pause of the given ms; prints the median CPU time of one run in each
// case as JSON. Nothing but this process's own code runs, so the difference is the
// machine's: what a pause costs the work that follows it (caches and predictors other
// work evicted meanwhile, CPU frequency).
const pauseMs = Number(process.argv[2] ?? 50);
const runs = Number(process.argv[3] ?? 60);
const items = Array.from({ length: 20_000 }, (_, i) => ({ i, s: `item-${i}` }));
let sink = 0;
const work = () => {
  let h = 0;
  for (let k = 0; k < 3; k++) for (const o of items) h = (h * 31 + o.i + o.s.length) | 0;
  sink ^= h;
};
const cpuUs = () => {
  const c = process.cpuUsage();
  return c.user + c.system;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (let i = 0; i < 200; i++) work();
const backToBack = [];
for (let i = 0; i < runs; i++) {
  const c0 = cpuUs();
  work();
  backToBack.push(cpuUs() - c0);
}
const paused = [];
for (let i = 0; i < runs; i++) {
  await new Promise((r) => setTimeout(r, pauseMs));
  const c0 = cpuUs();
  work();
  paused.push(cpuUs() - c0);
}
process.stdout.write(`${JSON.stringify({ backToBackUs: median(backToBack), pausedUs: median(paused), sink })}\n`);
