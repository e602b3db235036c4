"""`cloudsh orphans --all-regions --json` vs a one-region `cloudsh ls --json`, on a sandbox
holding a few of each kind of orphan: seven rounds, the two interleaved so both see the same
load; best and median of each. The regions are swept in parallel, so the sweep should cost
little more than one region's listing.

Target: ratio of the medians (orphans / ls) <= 1.5. The median, not the best: on a shared
two-core machine the best of a few runs of a 0.5 s command swings by a fifth from run to run.
"""

from __future__ import annotations

import json
import statistics
import time

from bench.common import BIN, bench_sandbox, report, run, timed

ROUNDS = 7


def main() -> float:
    with bench_sandbox(boot_s=3600) as env:
        import boto3

        ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"])
        image = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
        ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=20, MaxCount=20)
        vols = [ec2.create_volume(AvailabilityZone=f"{env['AWS_DEFAULT_REGION']}a", Size=8 + n)["VolumeId"]
                for n in range(10)]
        time.sleep(1.0)  # EC2 (the sandbox) may not know a new volume for a moment
        for n, vol in enumerate(vols):
            ec2.create_snapshot(VolumeId=vol)
            ec2.allocate_address(Domain="vpc")
            ec2.create_security_group(GroupName=f"cloudsh-bench-{n}", Description="bench", TagSpecifications=[
                {"ResourceType": "security-group", "Tags": [{"Key": "cloudsh:managed", "Value": "1"}]}])
        orphans = [str(BIN / "cloudsh"), "orphans", "--all-regions", "--json"]
        ls = [str(BIN / "cloudsh"), "ls", "--json"]
        found = json.loads(run(orphans, env).stdout)
        assert len(found) >= 30, f"expected at least 30 orphans, found {len(found)}"
        run(ls, env)  # warm the caches both use
        times: dict[str, list[float]] = {"orphans": [], "ls": []}
        for _ in range(ROUNDS):
            times["orphans"].append(timed(lambda: run(orphans, env)))
            times["ls"].append(timed(lambda: run(ls, env)))
        from cloudsh.root import sandbox_regions

        regions = len(sandbox_regions())
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["orphans"] / median["ls"]
    report(
        f"orphans --all-regions ({regions} regions served, {len(found)} orphans) vs ls",
        [("cloudsh orphans --all-regions --json", f"best {best['orphans'] * 1000:.0f} ms, median {median['orphans'] * 1000:.0f} ms"),
         ("cloudsh ls --json", f"best {best['ls'] * 1000:.0f} ms, median {median['ls'] * 1000:.0f} ms"),
         ("ratio", f"median {ratio:.2f} (target <= 1.5), best {best['orphans'] / best['ls']:.2f}")],
        {"orphans_best_s": best["orphans"], "ls_best_s": best["ls"],
         "orphans_median_s": median["orphans"], "ls_median_s": median["ls"]},
    )
    return ratio


if __name__ == "__main__":
    main()
