// jaxdissect serve: the pages' behaviour (units browser, painting, unit switches).
'use strict';
(function () {
  const body = document.body, key = body.dataset.key;
  const $ = (id) => document.getElementById(id);

  // the server's error message, whatever the answer's type
  async function failure(r) {
    const type = r.headers.get('Content-Type') || '';
    const text = type.includes('json') ? (await r.json()).error : '';
    return new Error(text || r.status + ' ' + r.statusText);
  }

  async function api(path, payload) {
    const opts = payload === undefined ? {} : {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(payload)};
    const r = await fetch(path, opts);
    if (!r.ok) throw await failure(r);
    return r.json();
  }

  // a whole number typed in a field, checked here so that a typo is named, not sent
  function whole(text, what, low, high) {
    const t = String(text).trim();
    if (!/^\d+$/.test(t) || +t < low || +t > high)
      throw new Error(what + ' must be a whole number from ' + low + ' to ' + high +
                      ', got "' + t + '"');
    return +t;
  }

  // ------------------------------------------------------------------ units
  function unitsPage() {
    const cards = $('cards'), catSel = $('cat'), labelIn = $('label'), iouIn = $('miniou');
    const silentIn = $('silent'), sortSel = $('sort'), shown = $('shown');
    // the unit cards are in the page (templates/cards.html); this filters and sorts them
    const units = [...cards.querySelectorAll('.card')].map(el => ({el: el,
      unit: +el.dataset.unit, category: el.dataset.category, iou: +el.dataset.iou,
      label: el.dataset.label, fires: el.dataset.fires === '1'}));
    function readHash() {
      const p = new URLSearchParams(location.hash.slice(1));
      if (p.has('cat')) catSel.value = p.get('cat');
      if (p.has('label')) labelIn.value = p.get('label');
      if (p.has('miniou')) iouIn.value = p.get('miniou');
      if (p.has('sort')) sortSel.value = p.get('sort');
      silentIn.checked = p.get('silent') !== '0';
    }
    function render() {
      const cat = catSel.value, text = labelIn.value.trim().toLowerCase();
      const minIou = parseFloat(iouIn.value) || 0, key = sortSel.value;
      const list = units.filter(u => u.fires ?
        (cat === 'all' || u.category === cat) && u.iou >= minIou &&
          (!text || u.label.toLowerCase().includes(text) || String(u.unit) === text) :
        silentIn.checked && cat === 'all' && minIou <= 0 && !text);
      const cmp = {
        iou: (a, b) => (b.fires - a.fires) || b.iou - a.iou || a.unit - b.unit,
        unit: (a, b) => a.unit - b.unit,
        label: (a, b) => (b.fires - a.fires) || a.label.localeCompare(b.label) || b.iou - a.iou,
        category: (a, b) => (b.fires - a.fires) || a.category.localeCompare(b.category) ||
          b.iou - a.iou,
      }[key];
      list.sort(cmp);
      cards.textContent = '';
      for (const u of list) cards.appendChild(u.el);
      shown.textContent = list.length;
      const p = new URLSearchParams({cat: catSel.value, label: labelIn.value,
        miniou: iouIn.value, sort: sortSel.value, silent: silentIn.checked ? '1' : '0'});
      history.replaceState(null, '', '#' + p.toString());
    }
    const cats = [...new Set(units.filter(u => u.fires).map(u => u.category))].sort();
    for (const c of cats) { const o = document.createElement('option'); o.value = c;
      o.textContent = c; catSel.appendChild(o); }
    readHash();
    for (const el of [catSel, labelIn, iouIn, silentIn, sortSel])
      el.addEventListener('input', render);
    render();
  }

  // ------------------------------------------------------------------ paint
  function paintPage() {
    const canvas = $('canvas'), ctx = canvas.getContext('2d'), result = $('result');
    const status = $('status');
    const base = new Image();
    let mask = null, H = 0, W = 0, drawing = false, busy = false, again = false;
    function redraw() {
      ctx.imageSmoothingEnabled = false;
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      if (!H) return;
      ctx.drawImage(base, 0, 0, canvas.width, canvas.height);
      ctx.fillStyle = 'rgba(255, 40, 40, 0.45)';
      const sx = canvas.width / W, sy = canvas.height / H;
      for (let y = 0; y < H; y++) for (let x = 0; x < W; x++)
        if (mask[y * W + x]) ctx.fillRect(x * sx, y * sy, sx, sy);
    }
    const numUnits = +body.dataset.numUnits;
    function seedIndex() {
      return {seed: whole($('seed').value, 'z seed', 0, 2147483647),
              index: whole($('index').value, 'sample', 0, 1000000)};
    }
    function load() {
      let si;
      try { si = seedIndex(); } catch (e) { status.textContent = 'error: ' + e.message; return; }
      status.textContent = 'generating (the first time compiles the generator) ...';
      fetch('/api/generate/' + key + '?seed=' + si.seed + '&index=' + si.index).then(async r => {
        if (!r.ok) throw await failure(r);
        return r.blob();
      }).then(b => { base.src = URL.createObjectURL(b); })
        .catch(e => { status.textContent = 'error: ' + e.message; });
    }
    // the request for the brushed region, or an Error naming what was typed wrong
    function paintRequest() {
      const mode = document.querySelector('input[name=mode]:checked').value;
      const payload = {...seedIndex(), mode: mode, mask: Array.from(mask).join('')};
      const typed = $('units').value.trim();
      if (typed) {
        payload.units = typed.split(/[\s,]+/).filter(t => t).map(t => {
          if (!/^\d+$/.test(t) || +t >= numUnits)
            throw new Error('units: "' + t + '" in "' + typed + '" is not a unit number ' +
                            '(0 to ' + (numUnits - 1) + ', e.g. 3,17,40)');
          return +t;
        });
      } else {
        payload.concept = $('concept').value;
        payload.n = whole($('n').value, 'best units', 1, numUnits);
      }
      return payload;
    }
    base.onload = () => {
      H = base.naturalHeight; W = base.naturalWidth;
      if (!mask || mask.length !== H * W) mask = new Uint8Array(H * W);
      result.src = base.src; body.dataset.ready = '1';
      status.textContent = 'brush a region, then paint'; redraw();
    };
    function brush(ev) {
      const r = canvas.getBoundingClientRect();
      const x = (ev.clientX - r.left) / r.width * W, y = (ev.clientY - r.top) / r.height * H;
      const rad = parseInt($('brush').value) * W / 64;
      for (let yy = Math.max(0, Math.floor(y - rad)); yy < Math.min(H, y + rad); yy++)
        for (let xx = Math.max(0, Math.floor(x - rad)); xx < Math.min(W, x + rad); xx++)
          if ((xx + .5 - x) ** 2 + (yy + .5 - y) ** 2 <= rad * rad) mask[yy * W + xx] = 1;
      redraw();
    }
    canvas.addEventListener('pointerdown', ev => { if (!H) return; drawing = true; brush(ev); });
    canvas.addEventListener('pointermove', ev => { if (drawing) brush(ev); });
    window.addEventListener('pointerup', () => { if (drawing) { drawing = false; paint(); } });
    async function paint() {
      if (!H) return;
      if (!mask.some(v => v)) { status.textContent = 'brush a region first'; return; }
      if (busy) { again = true; return; }
      let payload;
      try { payload = paintRequest(); }
      catch (e) { status.textContent = 'error: ' + e.message; return; }
      busy = true;
      status.textContent = 'painting ...';
      const t0 = performance.now();
      try {
        const r = await api('/api/paint/' + key, payload);
        result.src = r.image;
        body.dataset.painted = String((+body.dataset.painted || 0) + 1);
        status.textContent = (payload.concept ? payload.concept + ': ' : '') + r.units.length +
          ' units ' + r.mode + ' over ' + r.pixels + ' pixels; redrawn in ' + r.ms +
          ' ms (' + Math.round(performance.now() - t0) + ' ms with the request)';
      } catch (e) { status.textContent = 'error: ' + e.message; }
      busy = false;
      if (again) { again = false; paint(); }
    }
    $('generate').addEventListener('click', load);
    $('clear').addEventListener('click', () => { if (mask) mask.fill(0); result.src = base.src;
      redraw(); });
    $('paint').addEventListener('click', paint);
    load();
  }

  // --------------------------------------------------------------- classify
  // probabilities as percentages, tiny ones with their exponent (so that a change shows)
  const pct = (p) => p >= 1e-4 ? (100 * p).toFixed(3) + '%' : (100 * p).toExponential(2) + '%';

  function classifyPage() {
    const picked = $('picked'), probs = $('probs'), status = $('status');
    let index = 0, busy = false, again = false;
    function choose(i) {
      index = i; picked.src = '/api/image/' + key + '/' + i;
      for (const im of document.querySelectorAll('#images img'))
        im.classList.toggle('chosen', +im.dataset.index === i);
      update();
    }
    function checked(cls) {
      return [...document.querySelectorAll('#switches input.' + cls + ':checked')]
        .map(el => +el.dataset.unit);
    }
    async function update() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const r = await api('/api/classify/' + key, {index: index, off: checked('off'),
                                                     on: checked('on')});
        $('truth').textContent = r.label ? 'true class: ' + r.label : '';
        probs.textContent = '';
        for (const c of r.classes.slice(0, 10)) {
          const tr = document.createElement('tr'); tr.className = 'class';
          tr.dataset.name = c.name; tr.dataset.p = c.p;
          const name = document.createElement('td'); name.textContent = c.name;
          const bars = document.createElement('td');
          bars.innerHTML = '<span class="bar"></span><br><span class="bar base"></span>';
          bars.children[0].style.width = (c.p * 200).toFixed(1) + 'px';
          bars.children[2].style.width = (c.base * 200).toFixed(1) + 'px';
          const val = document.createElement('td'); val.className = 'p';
          val.textContent = pct(c.p) + ' (was ' + pct(c.base) + ')';
          tr.append(name, bars, val); probs.appendChild(tr);
        }
        status.textContent = r.off.length + ' off, ' + r.on.length + ' on; ' + r.ms + ' ms';
        body.dataset.updates = String((+body.dataset.updates || 0) + 1);
      } catch (e) { status.textContent = 'error: ' + e.message; }
      busy = false;
      if (again) { again = false; update(); }
    }
    document.getElementById('switches').addEventListener('change', ev => {
      const el = ev.target;
      if (!el.dataset.unit) return;
      const other = el.closest('tr').querySelector(el.classList.contains('off') ? '.on' : '.off');
      if (el.checked) other.checked = false;
      update();
    });
    $('ufilter').addEventListener('input', ev => {
      const t = ev.target.value.trim().toLowerCase();
      for (const tr of document.querySelectorAll('#switches tr[data-unit]'))
        tr.hidden = !!t && !(tr.dataset.label.toLowerCase().includes(t) || tr.dataset.unit === t);
    });
    $('reset').addEventListener('click', () => {
      for (const el of document.querySelectorAll('#switches input')) el.checked = false;
      update();
    });
    status.textContent = 'loading the classifier (the first time compiles it) ...';
    api('/api/images/' + key).then(r => {
      const box = $('images');
      for (let i = 0; i < r.count; i++) {
        const im = document.createElement('img'); im.src = '/api/image/' + key + '/' + i;
        im.dataset.index = i; im.alt = 'image ' + i;
        im.addEventListener('click', () => choose(i)); box.appendChild(im);
      }
      choose(0);
    }).catch(e => { status.textContent = 'error: ' + e.message; });
  }

  ({units: unitsPage, paint: paintPage, classify: classifyPage}[body.dataset.page] ||
   (() => {}))();
})();
