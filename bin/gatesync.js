#!/usr/bin/env node
// Runs the TypeScript CLI through tsx's loader, so `gatesync` works from an npm install without a build.
import { register } from 'tsx/esm/api';

register();
await import('../cli/gatesync.ts');
