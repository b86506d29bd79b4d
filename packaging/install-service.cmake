# Run by cmake --install and cpack (after CMakeLists.txt's install(CODE)
# set SIPEDGE_SRC, SIPEDGE_BIN and SIPEDGE_SBINDIR): writes sipedge.service
# for the prefix being installed to, and the /etc/default/sipedge example.
#   prefix /usr        -> /usr/sbin/sipedge, /etc/default/sipedge (packages)
#   prefix /usr/local  -> /usr/local/sbin/sipedge, /usr/local/etc/default/sipedge
# Both unit directories, /usr/lib/systemd/system and
# /usr/local/lib/systemd/system, are on systemd's search path.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(etc /etc)
else()
  set(etc "${CMAKE_INSTALL_PREFIX}/etc")
endif()
set(SIPEDGE_SBIN "${CMAKE_INSTALL_PREFIX}/${SIPEDGE_SBINDIR}")
set(SIPEDGE_ENVFILE "${etc}/default/sipedge")
configure_file("${SIPEDGE_SRC}/packaging/sipedge.service.in" "${SIPEDGE_BIN}/sipedge.service" @ONLY)
file(INSTALL "${SIPEDGE_BIN}/sipedge.service" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
# An operator's edited file is never overwritten (in the package dpkg
# keeps it as a conffile).
if(EXISTS "$ENV{DESTDIR}${SIPEDGE_ENVFILE}")
  message(STATUS "Keeping: $ENV{DESTDIR}${SIPEDGE_ENVFILE}")
else()
  file(INSTALL "${SIPEDGE_SRC}/packaging/sipedge.default" DESTINATION "${etc}/default"
       RENAME sipedge)
endif()
