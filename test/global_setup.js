// VGGNET_DEVICE=cuda runs the device-parametrised tests on the GPU (scripts/gpu-check.sh). Where the addon has no
// usable GPU every one of them would fail with the same error, so the run stops here once, saying why; without
// VGGNET_DEVICE the suite runs on the CPU and the CUDA-only cases skip with the reason printed.
const path = require('path');

module.exports = async () => {
  if (process.env.VGGNET_DEVICE !== 'cuda') return;
  const root = path.join(__dirname, '..');
  const addon = process.env.VGGNET_ADDON ? require(process.env.VGGNET_ADDON) : require('node-gyp-build')(root);
  const info = addon.buildInfo();
  if (info.cudaDeviceCount > 0) return;
  let why = 'this build of vggnet has no CUDA backend (built CPU-only)';
  if (info.cudaBuilt) {
    const err = JSON.parse(info.cuda).error;
    why = `no usable GPU was found${err ? ` (${err})` : ''}`;
  }
  throw new Error(`VGGNET_DEVICE=cuda, but ${why}: the device tests cannot run here (unset VGGNET_DEVICE for the CPU suite)`);
};
