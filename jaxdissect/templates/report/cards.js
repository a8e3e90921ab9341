(function(){
  // the unit cards are in the page (templates/cards.html); this filters and sorts them
  const cards = document.getElementById('cards');
  const catSel = document.getElementById('cat'), iouIn = document.getElementById('miniou');
  const sortSel = document.getElementById('sort'), shown = document.getElementById('shown');
  const units = [...cards.querySelectorAll('.card')].map(el => ({el: el,
    unit: +el.dataset.unit, category: el.dataset.category, iou: +el.dataset.iou,
    label: el.dataset.label, fires: el.dataset.fires === '1'}));
  const cats = [...new Set(units.map(u => u.category).filter(c => c))].sort();
  for (const c of cats) { const o = document.createElement('option'); o.value = c;
    o.textContent = c; catSel.appendChild(o); }
  function readHash(){
    const p = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
    if (p.has('cat')) catSel.value = p.get('cat');
    if (p.has('miniou')) iouIn.value = p.get('miniou');
    if (p.has('sort')) sortSel.value = p.get('sort');
  }
  function render(){
    const cat = catSel.value, minIou = parseFloat(iouIn.value) || 0, key = sortSel.value;
    const list = units.filter(u => u.fires ? (cat === 'all' || u.category === cat)
      && u.iou >= minIou : cat === 'all' && minIou <= 0);
    const cmp = {   // units that never fire last
      iou: (a, b) => (b.fires - a.fires) || b.iou - a.iou || a.unit - b.unit,
      unit: (a, b) => a.unit - b.unit,
      label: (a, b) => (b.fires - a.fires) || a.label.localeCompare(b.label) || b.iou - a.iou,
      category: (a, b) => (b.fires - a.fires) || a.category.localeCompare(b.category)
        || b.iou - a.iou,
    }[key];
    list.sort(cmp);
    cards.textContent = '';
    for (const u of list) cards.appendChild(u.el);
    shown.textContent = list.length;
    const p = new URLSearchParams({cat: catSel.value, miniou: iouIn.value, sort: sortSel.value});
    history.replaceState(null, '', '#' + p.toString());
  }
  readHash();
  for (const el of [catSel, iouIn, sortSel]) el.addEventListener('input', render);
  window.addEventListener('hashchange', () => { readHash(); render(); });
  render();
})();
