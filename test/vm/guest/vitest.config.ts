import { defineConfig } from 'vitest/config';

// Tests that run inside the test VM (scripts/vm/run.sh), started there with
//   node node_modules/vitest/vitest.mjs run --config test/vm/guest/vitest.config.ts
// They are named *.spec.ts so that the host's vitest.config.ts, which takes
// test/**/*.test.ts, never runs them on the host.
export default defineConfig({
  test: {
    include: ['test/vm/guest/**/*.spec.ts'],
    // Files share the guest kernel's LSM hooks, so they run one at a time.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
