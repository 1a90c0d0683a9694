r"""Serve an exported bundle over HTTP (see rec_jax.deploy.service).

    python -m rec_jax.serve --bundle=bundles/mf_kd_fusion --port=8080
    curl 'http://127.0.0.1:8080/recommend?user_id=196&k=10'

--host defaults to loopback; pass --host=0.0.0.0 to listen on every interface.
"""

import argparse

from rec_jax import console, errors

console.quiet_third_party()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rec_jax.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="a folder written by rec_jax.export")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--interactions_log", default=None,
                        help="where POST /interactions appends (default <bundle>/store/)")
    parser.add_argument("--tf_threads", type=int, default=1,
                        help="TensorFlow intra/inter-op threads (0: TF's defaults); 1 keeps "
                             "the tail latency low on small CPUs")
    args = parser.parse_args(argv)
    import uvicorn

    from rec_jax.deploy import service

    try:
        app = service.create_app(args.bundle, args.interactions_log, args.tf_threads)
    except (FileNotFoundError, OSError, ValueError) as e:
        errors.fail(e)
    print(f"serving {app.state.recommender.meta['model']} on http://{args.host}:{args.port}",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
