"""Client CPU per HEAD at each HTTP layer (raw socket, http.client, urllib3, with and without
wire.py) for one pre-signed HEAD of bench1/h1 on $S3_ENDPOINT (keys AK/SK; run bench/head_cpu.py
first, it creates h1). Usage: python bench/http_layers.py"""
import os, time, http.client, urllib3
import botocore.auth, botocore.awsrequest, botocore.credentials
ep=os.environ['S3_ENDPOINT']; host=ep.split('//')[1]
creds=botocore.credentials.Credentials('AK','SK')
req=botocore.awsrequest.AWSRequest(method='HEAD',url=ep+'/bench1/h1',headers={'x-amz-content-sha256':'UNSIGNED-PAYLOAD'})
botocore.auth.S3SigV4Auth(creds,'s3','us-east-1').add_auth(req)
H=dict(req.headers)
N=2000
def bench(name, one):
    for i in range(200): one()
    t=time.perf_counter(); c0=time.process_time()
    for i in range(N): one()
    print(f"{name}: wall {(time.perf_counter()-t)/N*1e6:.0f} us, cpu {(time.process_time()-c0)/N*1e6:.0f} us")
pool=urllib3.HTTPConnectionPool(host.split(':')[0],int(host.split(':')[1]),maxsize=4)
def u3():
    r=pool.urlopen('HEAD','/bench1/h1',headers=H,retries=False,redirect=False,preload_content=True); assert r.status==200
bench('urllib3', u3)
hc=http.client.HTTPConnection(host)
def hcl():
    hc.request('HEAD','/bench1/h1',headers=H); r=hc.getresponse(); r.read(); assert r.status==200
bench('http.client', hcl)
from s3mount.store import wire
class FC(http.client.HTTPConnection): response_class=wire.FastResponse
hc2=FC(host)
def hcl2():
    hc2.request('HEAD','/bench1/h1',headers=H); r=hc2.getresponse(); r.read(); assert r.status==200
bench('http.client fast', hcl2)
pool2=urllib3.HTTPConnectionPool(host.split(':')[0],int(host.split(':')[1]),maxsize=4); pool2.ConnectionCls=wire.HTTPConnection
def u32():
    r=pool2.urlopen('HEAD','/bench1/h1',headers=H,retries=False,redirect=False,preload_content=True); assert r.status==200
bench('urllib3 fast', u32)
