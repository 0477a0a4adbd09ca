# Medians and ranges of interleaved A/B runs of ab_run.sh: python3 ab_summary.py LABEL_A LABEL_B (run where the JSON files are).
import json,sys,glob,statistics
def load(prefix):
    runs=[]
    for f in sorted(glob.glob(f'{prefix}-*.json')):
        rows={}
        for line in open(f):
            line=line.strip()
            if not line.startswith('{'): continue
            d=json.loads(line)
            w=d['workload']; 
            if w=='w1': rows['W1 p50 ms']=d['p50_ms']; rows['W1 p99 ms']=d['p99_ms']
            elif w=='w2': rows[f"W2 {d['clients']}c ev/s"]=d['events_per_sec']
            elif w=='w3': rows['W3 ev/s']=d['events_per_sec']
            elif w=='w4' and d.get('part')=='stream_10k': rows['W4 10k p50 ms']=d['read_ms_p50']
            elif w=='w4': rows['W4 short reads/s']=d['ops_per_sec']
            elif w=='w5': rows['W5 ev/s']=d['events_per_sec']
            elif w=='w6': rows['W6 rounds/s']=d['rounds_per_sec']
            elif w=='s1': rows['S1 ev/s']=d['events_per_sec']
            elif w=='s2': rows['S2 p99 ms']=d['p99_ms']
            elif w=='s3': rows[f"S3 {d['part']} appends/s"]=d['events_per_sec']; rows[f"S3 {d['part']} delivered/s"]=d.get('events_delivered',0)/d['seconds']
        runs.append(rows)
    return runs
prefixes=sys.argv[1:]
data={p:load(p) for p in prefixes}
keys=list(data[prefixes[0]][0].keys())
print("| metric | "+" | ".join(f"{p} median (range, n={len(data[p])})" for p in prefixes)+" |")
print("|---|"+"---|"*len(prefixes))
for k in keys:
    cells=[]
    for p in prefixes:
        vals=[r[k] for r in data[p] if k in r]
        if not vals: cells.append("-"); continue
        med=statistics.median(vals)
        fmt=(lambda v: f"{v:.3f}") if 'ms' in k else (lambda v: f"{v:,.0f}")
        cells.append(f"{fmt(med)} ({fmt(min(vals))}-{fmt(max(vals))})")
    print(f"| {k} | "+" | ".join(cells)+" |")
