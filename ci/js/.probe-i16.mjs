import WebSocket from "ws";
const [url, ...frames] = process.argv.slice(2);
const ws = new WebSocket(url);
ws.binaryType = 'arraybuffer';
ws.onopen = async () => { for (const f of frames) { ws.send(f); await new Promise(r=>setTimeout(r,150)); } setTimeout(()=>ws.close(),400); };
ws.onmessage = (m) => console.log('recv', typeof m.data === 'string' ? m.data : Buffer.from(m.data).toString('hex'));
ws.onclose = (e) => console.log('close', e.code, JSON.stringify(e.reason));
ws.onerror = (e) => console.log('error', e.message);
