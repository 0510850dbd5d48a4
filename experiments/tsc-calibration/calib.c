/*
 * How good is a cycle-counter calibration on this node? The same measurement perftest makes
 * before it reports (its get_cpu_mhz(): linear regression of rdtsc deltas against
 * gettimeofday() deltas over 200 intervals of 100 to 2090 us, refused when r^2 < 0.9), written
 * here from that description to see what disturbs it. Prints one line per calibration:
 * "r2=<r^2> mhz=<slope> worst_us=<largest residual in us>".
 *
 *   calib [ROUNDS]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <x86intrin.h>

#define N 200

static long us_between(const struct timeval *a, const struct timeval *b)
{
	return (b->tv_sec - a->tv_sec) * 1000000L + (b->tv_usec - a->tv_usec);
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 1;

	for (int r = 0; r < rounds; r++) {
		double x[N], y[N], sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;

		for (int i = 0; i < N; i++) {
			struct timeval t1, t2;
			uint64_t c0 = __rdtsc();

			gettimeofday(&t1, NULL);
			do
				gettimeofday(&t2, NULL);
			while (us_between(&t1, &t2) < 100 + 10 * i);
			y[i] = (double)(__rdtsc() - c0);
			x[i] = (double)us_between(&t1, &t2);
		}
		for (int i = 0; i < N; i++) {
			sx += x[i];
			sy += y[i];
			sxx += x[i] * x[i];
			syy += y[i] * y[i];
			sxy += x[i] * y[i];
		}
		double b = (N * sxy - sx * sy) / (N * sxx - sx * sx);
		double a = (sy - b * sx) / N;
		double r2 = (N * sxy - sx * sy) * (N * sxy - sx * sy) / (N * sxx - sx * sx) / (N * syy - sy * sy);
		double worst = 0;

		for (int i = 0; i < N; i++) {
			double res = (y[i] - (a + b * x[i])) / b;

			if (res > worst)
				worst = res;
		}
		printf("r2=%.5f mhz=%.1f worst_us=%.0f\n", r2, b, worst);
		fflush(stdout);
	}
	return 0;
}
