"""Client CPU per HEAD: 2,000 HEADs in a loop against the server at $S3_ENDPOINT (bucket bench1,
keys AK/SK as in ../shared/bench/s3server start ... --access-key AK --secret-key SK).
Usage: python bench/head_cpu.py"""
import os, time, s3mount as s3
c=s3.S3Connection(access_key_id='AK',secret_access_key='SK',endpoint=os.environ.get('S3_ENDPOINT', 'http://127.0.0.1:23000'),tls=False,region='us-east-1',default_bucket='bench1')
st=s3.RemoteStore(c); cl=st.client
cl.put('bench1','h1',b'x'*100,{'x-amz-meta-a':'b'})
for i in range(200): cl.head('bench1','h1')
N=2000; t=time.perf_counter(); c0=time.process_time()
for i in range(N): cl.head('bench1','h1')
print(f"HEAD: wall {(time.perf_counter()-t)/N*1e6:.0f} us, client cpu {(time.process_time()-c0)/N*1e6:.0f} us")
