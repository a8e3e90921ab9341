(function(){
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const cards = document.getElementById('cards');
  const catSel = document.getElementById('cat'), iouIn = document.getElementById('miniou');
  const sortSel = document.getElementById('sort'), shown = document.getElementById('shown');
  const cats = [...new Set(data.units.map(u => u.category).filter(c => c))].sort();
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
    let units = data.units.filter(u => u.fires ? (cat === 'all' || u.category === cat)
      && u.iou >= minIou : cat === 'all' && minIou <= 0);
    const cmp = {   // units that never fire last
      iou: (a, b) => (b.fires - a.fires) || b.iou - a.iou || a.unit - b.unit,
      unit: (a, b) => a.unit - b.unit,
      label: (a, b) => (b.fires - a.fires) || a.label.localeCompare(b.label) || b.iou - a.iou,
      category: (a, b) => (b.fires - a.fires) || a.category.localeCompare(b.category)
        || b.iou - a.iou,
    }[key];
    units.sort(cmp);
    cards.textContent = '';
    for (const u of units) {
      const d = document.createElement('div');
      d.className = 'card' + (u.fires ? (u.labelled ? '' : ' unlabelled') : ' silent');
      d.dataset.unit = u.unit; d.dataset.category = u.fires ? u.category : '';
      d.dataset.iou = u.iou;
      const info = document.createElement('div'); info.className = 'info';
      if (!u.fires) {      // never above its threshold: no concept, no top images
        info.innerHTML = '<span class="unit">unit ' + u.unit + '</span> '
          + '<span class="silent-mark">never fires</span>';
        d.appendChild(info); cards.appendChild(d); continue;
      }
      info.innerHTML = '<span class="unit">unit ' + u.unit + '</span> <span class="label"></span>'
        + ' <span class="cat"></span> <span class="iou">IoU ' + u.iou.toFixed(3) + '</span>';
      if (u.p_value != null) {
        const sig = document.createElement('div'); sig.className = 'sig';
        sig.textContent = 'p ' + (u.p_value < 0.001 ? u.p_value.toExponential(1)
                                                     : u.p_value.toFixed(3))
          + (u.iou_low != null ? ', IoU ' + u.iou_low.toFixed(3) + '-' + u.iou_high.toFixed(3) : '')
          + (u.null_iou != null ? ', chance ' + u.null_iou.toFixed(3) : '');
        info.appendChild(sig);
      }
      info.querySelector('.label').textContent = u.label;
      info.querySelector('.cat').textContent = '(' + u.category + ')';
      d.appendChild(info);
      if (u.image) { const im = document.createElement('img'); im.src = u.image;
        im.alt = 'top images of unit ' + u.unit; d.appendChild(im); }
      cards.appendChild(d);
    }
    shown.textContent = units.length;
    const p = new URLSearchParams({cat: catSel.value, miniou: iouIn.value, sort: sortSel.value});
    history.replaceState(null, '', '#' + p.toString());
  }
  readHash();
  for (const el of [catSel, iouIn, sortSel]) el.addEventListener('input', render);
  window.addEventListener('hashchange', () => { readHash(); render(); });
  render();
})();
