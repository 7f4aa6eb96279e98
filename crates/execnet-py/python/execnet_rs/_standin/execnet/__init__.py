# The `execnet` that `python -m execnet_rs.standin install` puts on sys.path (through a
# .pth file): importing it makes `execnet` and its modules execnet_rs's for the rest of
# the process (this module is replaced in sys.modules as it runs).
import execnet_rs

execnet_rs.install_as_execnet()
