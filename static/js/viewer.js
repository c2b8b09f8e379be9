// Heatmap overlay: opacity slider and a toggle (button or the H key).
const heat = document.getElementById("heatmap");
const slider = document.getElementById("opacity");
const toggle = document.getElementById("toggle-heatmap");
if (heat && slider && toggle) {
  let shown = true;
  const apply = () => { heat.style.opacity = shown ? slider.value / 100 : 0; };
  slider.addEventListener("input", () => { shown = true; apply(); });
  toggle.addEventListener("click", () => { shown = !shown; apply(); });
  document.addEventListener("keydown", (e) => {
    if ((e.key === "h" || e.key === "H") && !e.target.closest("input, textarea, select")) { shown = !shown; apply(); }
  });
}
