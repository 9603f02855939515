// Preloaded into a child with NODE_OPTIONS="--import <this file>" (node refuses --cpu-prof there): starts
// the V8 CPU profiler at once and writes BENCH_PROFILE_DIR/<pid>.cpuprofile when the process exits.
// Plain JavaScript: it loads before tsx does.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.BENCH_PROFILE_DIR ?? '.';
const session = new Session();
session.connect();
session.post('Profiler.enable');
session.post('Profiler.start');
process.once('exit', () => {
  // A session on the process's own thread answers synchronously, so this runs inside 'exit'.
  session.post('Profiler.stop', (err, result) => {
    if (err === null) writeFileSync(join(dir, `${process.pid}.cpuprofile`), JSON.stringify(result.profile));
  });
});
