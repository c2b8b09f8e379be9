// Drag and drop onto the batch form: dropped files replace the file input's selection.
document.querySelectorAll("[data-dropzone]").forEach((zone) => {
  const input = document.getElementById(zone.dataset.dropzone);
  const stop = (e) => { e.preventDefault(); e.stopPropagation(); };
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { stop(e); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => { stop(e); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (e) => {
    input.files = e.dataTransfer.files;
    zone.textContent = `${input.files.length} file(s) ready to upload`;
  });
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
});
