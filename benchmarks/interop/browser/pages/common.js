// What every viewer page reads from its query string, and how it reports to shoot.mjs (window.result).
export const query = new URLSearchParams(location.search);
export const numbers = (key) => query.get(key).split(",").map(Number);
export const [width, height] = [Number(query.get("w")), Number(query.get("h"))];
export const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));

// Runs `draw` (which returns the number of splats the viewer loaded) and publishes its outcome.
export async function report(draw) {
  try {
    window.result = { loaded: await draw() };
  } catch (e) {
    window.result = { error: String(e?.message ?? e) };
  }
}
