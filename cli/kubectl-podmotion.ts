#!/usr/bin/env node
// `kubectl podmotion VERB ...`: kubectl runs kubectl-podmotion from PATH with the words after "podmotion".
import { main } from './main.js';

process.exitCode = await main(process.argv.slice(2));
