// Preloaded into Stryker and its test-runner processes (NODE_OPTIONS in the
// test:mutation script). @stryker-mutator/mocha-runner 9.x requires
// mocha/lib/cli/run-helpers and options without an extension; mocha 12 ships
// them as .cjs, which require() does not try by default. Registering the
// extension lets those two requires resolve; nothing else changes.
'use strict';
/* global require */
if (!('.cjs' in require.extensions)) require.extensions['.cjs'] = require.extensions['.js'];
