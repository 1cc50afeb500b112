// The Khronos glTF validator on one file: prints its report's issue messages as JSON lines
// (tests/test_formats.py). usage: node validate_gltf.mjs FILE.glb
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

const path = process.argv[2];
const report = await validator.validateBytes(new Uint8Array(await readFile(path)), { maxIssues: 1000 });
console.log(JSON.stringify({ numErrors: report.issues.numErrors, numWarnings: report.issues.numWarnings,
  messages: report.issues.messages.map((m) => ({ code: m.code, severity: m.severity, message: m.message, pointer: m.pointer })) }));
